// in-toto attestations: the Statement v1 envelope-less layout, and the SLSA Provenance v1
// predicate osbuild puts in it (https://slsa.dev/spec/v1.0/provenance).

export const STATEMENT_TYPE = "https://in-toto.io/Statement/v1";
export const SLSA_PROVENANCE_TYPE = "https://slsa.dev/provenance/v1";
export const IN_TOTO_MEDIA_TYPE = "application/vnd.in-toto+json";

/** Algorithm → lowercase hex, e.g. { sha256: "…" }. */
export type DigestSet = Record<string, string>;

export interface ResourceDescriptor {
  name?: string;
  uri?: string;
  digest?: DigestSet;
  annotations?: Record<string, string>;
}

export interface Subject {
  name: string;
  digest: DigestSet;
}

export interface SlsaProvenance {
  buildDefinition: {
    buildType: string;
    externalParameters: Record<string, unknown>;
    internalParameters?: Record<string, unknown>;
    resolvedDependencies: ResourceDescriptor[];
  };
  runDetails: {
    builder: { id: string; version?: Record<string, string> };
    metadata?: { invocationId?: string };
  };
}

export interface ProvenanceStatement {
  _type: typeof STATEMENT_TYPE;
  subject: Subject[];
  predicateType: typeof SLSA_PROVENANCE_TYPE;
  predicate: SlsaProvenance;
}

/** The statement in `value`, or a sentence saying why it is not one. */
export function asProvenanceStatement(value: unknown): ProvenanceStatement | string {
  if (typeof value !== "object" || value === null) return "it is not a JSON object";
  const statement = value as Partial<ProvenanceStatement>;
  if (statement._type !== STATEMENT_TYPE) return `its _type is ${JSON.stringify(statement._type)}, not ${STATEMENT_TYPE}`;
  if (statement.predicateType !== SLSA_PROVENANCE_TYPE) return `its predicateType is ${JSON.stringify(statement.predicateType)}, not ${SLSA_PROVENANCE_TYPE}`;
  if (!Array.isArray(statement.subject) || statement.subject.some((subject) => typeof subject?.name !== "string" || typeof subject.digest?.sha256 !== "string")) return "its subjects lack a name or a sha256 digest";
  if (!Array.isArray(statement.predicate?.buildDefinition?.resolvedDependencies)) return "it has no buildDefinition.resolvedDependencies";
  return statement as ProvenanceStatement;
}
