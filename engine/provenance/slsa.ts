// The provenance of a target: an in-toto Statement v1 whose subject is the output's sha256,
// with a SLSA Provenance v1 predicate: the config's files and parameters, the source date,
// every host input and fetched dependency by digest, and osbuild's and its tools' versions.
// `osbuild verify-reproducible --provenance` rebuilds from it and compares the subject.

import { pathToFileURL } from "node:url";
import type { PreparedStep } from "../build.js";
import { SLSA_PROVENANCE_TYPE, STATEMENT_TYPE, type ProvenanceStatement, type ResourceDescriptor } from "../../formats/in-toto.js";
import { OSBUILD_VERSION } from "../version.js";
import type { Lineage } from "./lineage.js";
import { hostInputsOf } from "./record.js";

/** What `buildDefinition.buildType` names: an osbuild run of a config's targets. */
export const BUILD_TYPE = "urn:osbuild:build-type:run:v1";
const BUILDER_ID = "urn:osbuild:builder:local";
/** The digest osbuild takes of a host directory (each entry's path, type, mode, owner and content), not a hash of any one file. */
export const DIRECTORY_DIGEST = "osbuildDirSha256";

/** How the build was asked for: what a rebuild must repeat. */
export interface Invocation {
  configFile: string;
  /** Every file of the config (the config and what it imports), absolute path → sha256 hex. */
  configFiles: Readonly<Record<string, string>>;
  /** Parameter values, host paths relative to the config's directory. */
  params: Readonly<Record<string, unknown>>;
  sourceDateEpoch: number;
  arch: string;
  /** A host path as recorded: relative to the config's directory when inside it. */
  displayPath(path: string): string;
}

export function configInputs(invocation: Invocation): ResourceDescriptor[] {
  return Object.entries(invocation.configFiles)
    .map(([path, sha256]) => ({ name: `config:${invocation.displayPath(path)}`, uri: pathToFileURL(path).href, digest: { sha256 } }))
    .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

/** The host files and directories that the steps' options name, by digest. */
export function hostInputs(steps: ReadonlyArray<{ id: string; prepared: PreparedStep }>): ResourceDescriptor[] {
  return steps.flatMap(({ id, prepared }) =>
    hostInputsOf(prepared).map((input): ResourceDescriptor => ({
      name: `host:${id}.${input.option}${input.index !== undefined ? `[${input.index}]` : ""}`,
      uri: pathToFileURL(input.path).href,
      digest: { [input.fingerprint.type === "file" ? "sha256" : DIRECTORY_DIGEST]: input.fingerprint.sha256 },
      ...(input.fingerprint.type === "dir" ? { annotations: { type: "directory" } } : {}),
    })),
  );
}

export function provenanceOf(lineage: Lineage, subjectSha256: string, invocation: Invocation, inputs: readonly ResourceDescriptor[]): ProvenanceStatement {
  const fetched: ResourceDescriptor[] = lineage.upstream.flatMap((step) =>
    (step.provenance?.dependencies ?? []).map((dependency) => ({
      name: `${step.id}:${dependency.name}`,
      uri: dependency.uri,
      ...(dependency.digest ? { digest: { ...dependency.digest } } : {}),
      ...(dependency.annotations ? { annotations: { ...dependency.annotations } } : {}),
    })),
  );
  const tools: Record<string, string> = {};
  for (const step of lineage.upstream) Object.assign(tools, step.record.preimage.tools);
  return {
    _type: STATEMENT_TYPE,
    subject: [{ name: lineage.target, digest: { sha256: subjectSha256 } }],
    predicateType: SLSA_PROVENANCE_TYPE,
    predicate: {
      buildDefinition: {
        buildType: BUILD_TYPE,
        externalParameters: {
          config: invocation.displayPath(invocation.configFile),
          target: lineage.target,
          parameters: invocation.params,
          sourceDateEpoch: invocation.sourceDateEpoch,
          arch: invocation.arch,
        },
        internalParameters: {
          steps: lineage.upstream.map((step) => ({ id: step.id, kind: step.kind, version: step.record.preimage.version, key: step.record.key })),
        },
        resolvedDependencies: [...configInputs(invocation), ...inputs, ...fetched],
      },
      runDetails: {
        builder: { id: BUILDER_ID, version: { osbuild: OSBUILD_VERSION, node: process.version, ...Object.fromEntries(Object.entries(tools).sort(([a], [b]) => (a < b ? -1 : 1))) } },
      },
    },
  };
}
