// mkTar: the rootfs as one tar archive of its merged tree (every path once, parents first,
// whiteouts applied), streamed from the layers: what `tar -C rootfs -c .` of the tree would
// hold, with the layers' owners, modes, devices and xattrs, and reproducible. `osbuild
// osbuilder` unpacks it into osbuilder's rootfs directory.

import { createWriteStream } from "node:fs";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { defineStep, type LayerEvent } from "../engine/index.js";
import { encodeTarHeader, paddingFor, tarTrailer } from "../formats/tar.js";
import { archiveLayer } from "./layer-archive.js";

export type MkTarOptions = Record<never, never>;

export const mkTar = defineStep({
  kind: "mk-tar",
  version: 1,
  inputs: ["rootfs"],
  output: "blob",
  mediaTypes: { out: "application/x-tar" },
  async run(_options: MkTarOptions, ctx) {
    const [rootfs] = ctx.inputs;
    const parts = await rootfs.layerParts();
    async function* archive(): AsyncGenerator<Buffer> {
      for (let index = 0; index < parts.length; index++) yield* layerTar(rootfs.readLayer(index));
      yield tarTrailer();
    }
    await pipeline(Readable.from(archive()), createWriteStream(ctx.outputPath()));
  },
});

/** One layer's part of the tree as tar entries. */
function layerTar(batches: AsyncIterable<readonly LayerEvent[]>): AsyncGenerator<Buffer> {
  return archiveLayer(batches, {
    // A file entry's fields are the tar header's; only a file carries a size.
    header: (entry) => [encodeTarHeader({ ...entry, size: entry.type === "file" ? entry.size : 0, xattrs: entry.xattrs ? { ...entry.xattrs } : undefined })],
    padding: paddingFor,
  });
}
