// Writes each target's SBOM (<target>.spdx.json, for a rootfs or what was packed from one)
// and provenance (<target>.intoto.json) beside it in the output directory, atomically, and
// only when what they describe changed. When switched off, removes the ones it wrote before,
// so that an old SBOM never sits beside a new image.

import { renameSync, rmSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { neededSteps, type ActionRecord, type BuildContext, type PreparedStep, type StoredArtifact } from "../build.js";
import type { EventSink } from "../events.js";
import type { BuildGraph } from "../graph.js";
import { canonicalJson, sha256Hex } from "../key.js";
import { ociDocuments, statKey } from "../outputs.js";
import { hexOf, ownedName } from "../store.js";
import { readMemoFile, writeMemoFile } from "../memo.js";
import type { Attestations } from "../types.js";
import { OSBUILD_VERSION } from "../version.js";
import { FileDigests } from "./file-digests.js";
import { lineageOf, type Lineage } from "./lineage.js";
import { readProvenance } from "./record.js";
import { sbomOf } from "./sbom.js";
import { hostInputs, provenanceOf, type Invocation } from "./slsa.js";

export interface AttestSettings {
  sbom: boolean;
  provenance: boolean;
  invocation: Invocation;
}

/** Bumped when what the documents say changes, so that up-to-date ones are written again. */
const DOCUMENT_SCHEMA = 1;

export const SBOM_SUFFIX = ".spdx.json";
export const PROVENANCE_SUFFIX = ".intoto.json";

interface State {
  [path: string]: { key: string; stat: string };
}

export async function writeAttestations(
  context: BuildContext,
  graph: BuildGraph,
  results: ReadonlyMap<string, ActionRecord | undefined>,
  prepared: ReadonlyMap<string, PreparedStep>,
  targets: ReadonlyMap<string, StoredArtifact>,
  attest: AttestSettings,
  emit: EventSink,
): Promise<Record<string, Attestations>> {
  const outDir = resolve(context.settings.outDir);
  const stateFile = join(context.settings.cacheDir, "memo", "attestations.json");
  const state = readMemoFile<State>(stateFile, {});
  const written: Record<string, Attestations> = {};
  const fileDigests = new FileDigests(context.layers);
  let changed = false;

  for (const [target, artifact] of targets) {
    const edge = graph.targets.get(target)!;
    const upstream = graph.order.filter((id) => neededSteps(graph, [edge.from]).has(id));
    const keyOf = (kind: string): string =>
      sha256Hex(canonicalJson({ schema: DOCUMENT_SCHEMA, osbuild: OSBUILD_VERSION, node: process.version, kind, target, artifact: artifact.digest, steps: upstream.map((id) => results.get(id)?.key ?? null), invocation: { ...attest.invocation, displayPath: undefined } }));
    let lineage: Lineage | undefined;
    const lineageNow = (): Lineage => (lineage ??= lineageOf(graph, target, results, (digest) => readProvenance(context.store, digest)));
    const subject = (): string => (artifact.kind === "blob" ? hexOf(artifact.digest) : hexOf(ociDocuments(context.settings, artifact).manifest.digest));
    const paths: Attestations = {};

    const documents: Array<{ kind: "sbom" | "provenance"; wanted: boolean; file: string; make: () => Promise<unknown | undefined> }> = [
      {
        kind: "sbom",
        wanted: attest.sbom && (artifact.kind === "rootfs" || graph.steps.get(edge.from)!.inputs.some((input) => input.kind === "rootfs")),
        file: `${target}${SBOM_SUFFIX}`,
        make: async () => {
          const found = lineageNow();
          if (!found.rootfs) return undefined;
          const rootfs = found.rootfs;
          const view = await context.layers.view(rootfs);
          return sbomOf({ lineage: found, subjectSha256: subject(), sourceDateEpoch: context.settings.sourceDateEpoch, view, fileDigests: (path) => fileDigests.of(rootfs, view, path), displayPath: attest.invocation.displayPath });
        },
      },
      {
        kind: "provenance",
        wanted: attest.provenance,
        file: `${target}${PROVENANCE_SUFFIX}`,
        make: async () => {
          const found = lineageNow();
          const inputs = hostInputs(found.upstream.map((step) => ({ id: step.id, prepared: prepared.get(step.id)! })));
          return provenanceOf(found, subject(), attest.invocation, inputs);
        },
      },
    ];
    for (const document of documents) {
      const path = join(outDir, document.file);
      if (graph.targets.has(document.file)) {
        if (document.wanted) emit({ type: "warning", message: `not writing ${path}: it is the output of the target of that name` });
        continue;
      }
      const known = state[path];
      if (!document.wanted) {
        // Switched off: an SBOM from an earlier build must not describe this one's output.
        if (known) {
          rmSync(path, { force: true });
          delete state[path];
          changed = true;
        }
        continue;
      }
      const key = keyOf(document.kind);
      if (known?.key === key && known.stat === statKey(path)) {
        paths[document.kind] = path;
        continue;
      }
      const value = await document.make();
      if (value === undefined) continue;
      // Under a name the next build removes if this one is killed half-way (as outputs are written).
      const temp = join(outDir, `.${ownedName("out")}`);
      try {
        writeFileSync(temp, `${JSON.stringify(value, null, 2)}\n`);
        renameSync(temp, path);
      } finally {
        rmSync(temp, { force: true });
      }
      state[path] = { key, stat: statKey(path) };
      changed = true;
      paths[document.kind] = path;
      emit({ type: "attestation", target, kind: document.kind, path });
    }
    written[target] = paths;
  }
  if (changed) writeMemoFile(stateFile, state);
  await fileDigests.save();
  return written;
}
