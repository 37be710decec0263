// The SBOM of a target (SPDX 2.3 JSON): the output itself by sha256, every package and
// component its rootfs holds (from the steps' provenance records), what the steps fetched
// (a mirror's release file, a base image by digest), and the files host-file steps added.
// Nothing in it depends on the clock, the cache or where the build ran: two clean builds
// give the same bytes (`created` is the source date, the namespace a digest of the rest).

import { canonicalJson, sha256Hex } from "../key.js";
import type { MergedView } from "../layers/merge.js";
import { DOCUMENT_ID, SPDX_VERSION, downloadLocationOf, spdxDate, spdxId, type SpdxChecksum, type SpdxDocument, type SpdxFile, type SpdxPackage, type SpdxRelationship } from "../../formats/spdx.js";
import type { Component, ResolvedInput } from "../types.js";
import { OSBUILD_VERSION } from "../version.js";
import { componentsOf } from "./contents.js";
import type { ChainStep, Lineage } from "./lineage.js";
import type { HostFileRecord } from "./record.js";

export interface SbomInput {
  lineage: Lineage;
  /** The output's sha256 (hex): the file's, or a rootfs image's manifest's. */
  subjectSha256: string;
  sourceDateEpoch: number;
  /** The merged view of the lineage's rootfs, and the digests of its regular files' content. */
  view: MergedView;
  fileDigests(path: string): Promise<{ sha1: string; sha256: string }>;
  /** A host path as the SBOM shows it (relative to the config's directory when inside it). */
  displayPath(path: string): string;
}

const DIGEST_ALGORITHMS: Record<string, SpdxChecksum["algorithm"]> = { sha256: "SHA256", sha1: "SHA1", sha512: "SHA512", md5: "MD5" };

export async function sbomOf(input: SbomInput): Promise<SpdxDocument> {
  const { lineage } = input;
  const outputId = spdxId("Output", lineage.target, input.subjectSha256);
  const packages: SpdxPackage[] = [];
  const relationships: SpdxRelationship[] = [{ spdxElementId: DOCUMENT_ID, relationshipType: "DESCRIBES", relatedSpdxElement: outputId }];
  const rootfsNote = lineage.rootfs && lineage.artifact.kind === "blob" ? ` from the rootfs made by step ${lineage.rootfs.stepId}` : "";
  packages.push({
    SPDXID: outputId,
    name: lineage.target,
    downloadLocation: "NOASSERTION",
    filesAnalyzed: false,
    checksums: [{ algorithm: "SHA256", checksumValue: input.subjectSha256 }],
    primaryPackagePurpose: lineage.artifact.kind === "rootfs" ? "CONTAINER" : "FILE",
    comment: `${lineage.artifact.kind === "rootfs" ? "an OCI image (its manifest's digest)" : "a file"} made by step ${lineage.producer.id} (${lineage.producer.kind})${rootfsNote}`,
  });

  const componentIds = new Map<Component, string>();
  for (const { database, component } of sortComponents(componentsOf(lineage.chain))) {
    const id = spdxId("Package", component.name, sha256Hex(canonicalJson([database, component.name, component.version, component.architecture ?? ""])));
    componentIds.set(component, id);
    packages.push(componentPackage(id, database, component));
    relationships.push({ spdxElementId: outputId, relationshipType: "CONTAINS", relatedSpdxElement: id });
  }

  for (const { step, dependency } of dependenciesOf(lineage)) {
    const id = spdxId("Input", dependency.name, sha256Hex(canonicalJson([step, dependency.name, dependency.uri])));
    packages.push(dependencyPackage(id, step, dependency));
    relationships.push({ spdxElementId: outputId, relationshipType: "GENERATED_FROM", relatedSpdxElement: id });
  }

  const files = await hostFiles(input);
  const owners = ownersOf(componentIds);
  for (const file of files) {
    relationships.push({ spdxElementId: outputId, relationshipType: "CONTAINS", relatedSpdxElement: file.SPDXID });
    for (const id of owners.get(file.fileName.slice(2)) ?? []) relationships.push({ spdxElementId: id, relationshipType: "CONTAINS", relatedSpdxElement: file.SPDXID });
  }

  const document: Omit<SpdxDocument, "documentNamespace"> = {
    spdxVersion: SPDX_VERSION,
    dataLicense: "CC0-1.0",
    SPDXID: DOCUMENT_ID,
    name: lineage.target,
    creationInfo: { created: spdxDate(input.sourceDateEpoch), creators: [`Tool: osbuild-${OSBUILD_VERSION}`], comment: "created is the build's source date (SOURCE_DATE_EPOCH)" },
    packages,
    files,
    relationships,
  };
  // The namespace is unique to this content: a digest of the rest of the document.
  const namespace = `https://spdx.org/spdxdocs/osbuild-${lineage.target}-${sha256Hex(canonicalJson(document))}`;
  const { spdxVersion, dataLicense, SPDXID, name, creationInfo } = document;
  return { spdxVersion, dataLicense, SPDXID, name, documentNamespace: namespace, creationInfo, packages, files, relationships };
}

/** Path → the components listing it, in the components' order (a rootfs from a directory lists every file). */
function ownersOf(componentIds: ReadonlyMap<Component, string>): Map<string, string[]> {
  const owners = new Map<string, string[]>();
  for (const [component, id] of componentIds) {
    for (const path of component.files ?? []) {
      const ids = owners.get(path);
      if (!ids) owners.set(path, [id]);
      else if (ids[ids.length - 1] !== id) ids.push(id);
    }
  }
  return owners;
}

function sortComponents<T extends { database: string; component: Component }>(items: T[]): T[] {
  const key = (item: T): string => `${item.database}\0${item.component.name}\0${item.component.architecture ?? ""}\0${item.component.version}`;
  return [...items].sort((a, b) => (key(a) < key(b) ? -1 : key(a) > key(b) ? 1 : 0));
}

function checksumsOf(digests: Readonly<Record<string, string>> | undefined): SpdxChecksum[] | undefined {
  const checksums = Object.entries(digests ?? {})
    .filter(([algorithm]) => algorithm in DIGEST_ALGORITHMS)
    .map(([algorithm, value]) => ({ algorithm: DIGEST_ALGORITHMS[algorithm]!, checksumValue: value }));
  return checksums.length > 0 ? checksums : undefined;
}

function componentPackage(id: string, database: string, component: Component): SpdxPackage {
  const checksums = checksumsOf(component.digests);
  const source = component.source;
  return {
    SPDXID: id,
    name: component.name,
    versionInfo: component.version,
    downloadLocation: downloadLocationOf(component.downloadLocation),
    filesAnalyzed: false,
    ...(component.supplier ? { supplier: component.supplier } : {}),
    ...(checksums ? { checksums } : {}),
    ...(source ? { sourceInfo: `built from the source package ${source.name} ${source.version}` } : {}),
    ...(component.purl ? { externalRefs: [{ referenceCategory: "PACKAGE-MANAGER" as const, referenceType: "purl", referenceLocator: component.purl }] } : {}),
    comment: database ? `installed${component.architecture ? ` (${component.architecture})` : ""}, as the ${database} database records it` : `installed by a step${component.architecture ? ` (${component.architecture})` : ""}`,
  };
}

function dependencyPackage(id: string, step: string, dependency: ResolvedInput): SpdxPackage {
  const checksums = checksumsOf(dependency.digest);
  const notes = Object.entries(dependency.annotations ?? {}).map(([key, value]) => `${key}: ${value}`);
  return {
    SPDXID: id,
    name: dependency.name,
    downloadLocation: downloadLocationOf(dependency.uri),
    filesAnalyzed: false,
    ...(checksums ? { checksums } : {}),
    comment: [`fetched by step ${step} from ${dependency.uri}`, ...notes].join("; "),
  };
}

function dependenciesOf(lineage: Lineage): Array<{ step: string; dependency: ResolvedInput }> {
  return lineage.upstream.flatMap((step) => (step.provenance?.dependencies ?? []).map((dependency) => ({ step: step.id, dependency })));
}

/** The regular files of the output that host-file steps put there and nothing changed since. */
async function hostFiles(input: SbomInput): Promise<SpdxFile[]> {
  const byPath = new Map<string, { step: ChainStep; record: HostFileRecord; hostSha256?: string; hostPath: string }>();
  for (const step of input.lineage.chain) {
    for (const record of step.provenance?.hostFiles ?? []) {
      for (const { path, hostSha256, hostPath } of pathsOf(record, input.view, input.lineage, step)) {
        const entry = input.view.get(path);
        if (entry?.type !== "file" || !step.layers.includes(entry.layer)) continue;
        // A host directory's file is listed as such only while it is a copy (depmod rewrites modules.dep).
        if (record.kind === "directory" && hostSha256 !== undefined && (entry.sha256 ?? (await input.fileDigests(path)).sha256) !== hostSha256) continue;
        byPath.set(path, { step, record, hostPath, ...(hostSha256 ? { hostSha256 } : {}) });
      }
    }
  }
  const files: SpdxFile[] = [];
  for (const path of [...byPath.keys()].sort()) {
    const { step, record, hostSha256, hostPath } = byPath.get(path)!;
    const { sha1, sha256 } = await input.fileDigests(path);
    const from = record.kind === "archive" ? `unpacked from host archive ${input.displayPath(hostPath)}` : `from host file ${input.displayPath(hostPath)}`;
    files.push({
      SPDXID: spdxId("File", path, sha256Hex(path)),
      fileName: `./${path}`,
      checksums: [
        { algorithm: "SHA1", checksumValue: sha1 },
        { algorithm: "SHA256", checksumValue: sha256 },
      ],
      comment: `${from}${hostSha256 && record.kind !== "archive" ? ` (sha256 ${hostSha256})` : record.sha256 ? ` (sha256 ${record.sha256})` : ""} by step ${step.id} (${step.kind}), option ${record.option}`,
    });
  }
  return files;
}

function pathsOf(record: HostFileRecord, view: MergedView, lineage: Lineage, step: ChainStep): Array<{ path: string; hostSha256?: string; hostPath: string }> {
  switch (record.kind) {
    case "file":
      return [{ path: record.treePath, hostPath: record.hostPath, ...(record.sha256 ? { hostSha256: record.sha256 } : {}) }];
    case "directory":
      return Object.entries(record.files ?? {}).map(([relative, sha256]) => ({
        path: record.treePath === "" ? relative : relative === "" ? record.treePath : `${record.treePath}/${relative}`,
        hostPath: relative === "" ? record.hostPath : `${record.hostPath}/${relative}`,
        hostSha256: sha256,
      }));
    case "archive": {
      if (record.paths) return record.paths.map((path) => ({ path, hostPath: record.hostPath }));
      const index = lineage.rootfs?.layers.findIndex((layer) => layer.digest === record.layer) ?? -1;
      if (index < 0 || !step.layers.includes(index)) return [];
      return view
        .entries()
        .filter((entry) => entry.layer === index)
        .map((entry) => ({ path: entry.path, hostPath: record.hostPath }));
    }
  }
}
