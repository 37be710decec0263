// The SHA1 and SHA256 of the files an SBOM lists (SPDX 2.3 wants a SHA1 for every file).
//
// The SHA256 is the layer TOC's, which reading the file checks. No TOC holds a SHA1, and a
// rootfs taken from a host directory lists every one of its files: reading them all again for
// each SBOM cost more than packing the initrd. So a file's SHA1 is computed once and kept in
// the cache beside the layer that holds its bytes (`osbuild:file-sha1:<layer digest>`, keyed
// by where the bytes sit in the layer), and lives and is pruned with that layer.

import { createHash } from "node:crypto";
import { RootfsInputImpl } from "../inputs.js";
import { sha256Hex, type Digest } from "../key.js";
import type { MergedView } from "../layers/merge.js";
import type { Layers, RootfsValue } from "../rootfs.js";

export interface FileDigest {
  sha1: string;
  sha256: string;
}

interface KeptSha1s {
  version: 1;
  /** Offset of the file's bytes in the layer → SHA1 (hex). */
  sha1: Record<string, string>;
}

/** A layer's SHA1s as known to this process, and whether it added some. */
interface LayerSha1s {
  sha1: Map<number, string>;
  added: boolean;
}

const SHA1_HEX = /^[0-9a-f]{40}$/;
const keyOf = (layer: Digest): string => `osbuild:file-sha1:${layer}`;

export class FileDigests {
  private readonly known = new Map<Digest, Promise<LayerSha1s>>();

  constructor(private readonly layers: Layers) {}

  async of(rootfs: RootfsValue, view: MergedView, path: string): Promise<FileDigest> {
    const entry = view.get(path); // not a regular file (a symlink): read through, hashed each time
    const layer = entry?.type === "file" && entry.dataLayer !== undefined ? rootfs.layers[entry.dataLayer]?.digest : undefined;
    if (!entry || layer === undefined || entry.offset === undefined) return this.read(rootfs, path);
    const kept = await this.keptFor(layer);
    const sha1 = kept.sha1.get(entry.offset);
    if (sha1 !== undefined && entry.sha256 !== undefined) return { sha1, sha256: entry.sha256 };
    const digests = await this.read(rootfs, path, entry.sha256);
    kept.sha1.set(entry.offset, digests.sha1);
    kept.added = true;
    return digests;
  }

  /** Keeps the SHA1s this process computed, for the next SBOM of these layers. */
  async save(): Promise<void> {
    for (const [layer, pending] of this.known) {
      const kept = await pending;
      if (!kept.added) continue;
      const value: KeptSha1s = { version: 1, sha1: Object.fromEntries([...kept.sha1].sort((a, b) => a[0] - b[0]).map(([offset, sha1]) => [String(offset), sha1])) };
      await this.layers.store.putJson(keyOf(layer), value);
      kept.added = false;
    }
  }

  /** Reads the file and hashes it; reading checked it against the TOC's SHA256, when there is one. */
  private async read(rootfs: RootfsValue, path: string, tocSha256?: string): Promise<FileDigest> {
    const data = await new RootfsInputImpl(rootfs, this.layers).readFile(path);
    return { sha1: createHash("sha1").update(data).digest("hex"), sha256: tocSha256 ?? sha256Hex(data) };
  }

  private keptFor(layer: Digest): Promise<LayerSha1s> {
    let pending = this.known.get(layer);
    if (!pending) {
      pending = this.load(layer);
      this.known.set(layer, pending);
    }
    return pending;
  }

  /** What an earlier build kept; anything unreadable or malformed counts as nothing kept. */
  private async load(layer: Digest): Promise<LayerSha1s> {
    const sha1 = new Map<number, string>();
    const stored = await this.layers.store.getJson<unknown>(keyOf(layer)).catch(() => undefined);
    const value = stored?.value as Partial<KeptSha1s> | undefined;
    if (value?.version === 1 && typeof value.sha1 === "object" && value.sha1 !== null) {
      for (const [offset, digest] of Object.entries(value.sha1)) {
        if (/^\d+$/.test(offset) && typeof digest === "string" && SHA1_HEX.test(digest)) sha1.set(Number(offset), digest);
      }
    }
    return { sha1, added: false };
  }
}
