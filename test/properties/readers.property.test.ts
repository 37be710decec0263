// Property tests: whatever bytes come in, the readers of hostile input parse them or refuse
// them with their own error (TarFormatError, CpioFormatError, RegistryError, the MBR's and
// GPT's own messages), never with a crash of another kind (a TypeError, Node's buffer
// range errors) or a hang. Inputs are random bytes and random mutations of valid data:
// flipped bytes, truncations, and numeric fields set to huge or malformed values, with the
// checksums fixed up afterwards so that the mutation reaches past the checksum test.
//
// Fixed seed (OSBUILD_PROPERTY_SEED to change it); fast-check prints the seed and the
// shrunk counterexample on a failure. A watchdog thread ends the run if one input takes
// more than 10 s (a reader stuck in a loop would block every timer of the test).

import { once } from "node:events";
import { createServer, type Server } from "node:http";
import { createHash } from "node:crypto";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CpioFormatError, CpioParser, encodeNewcHeader, newcPadding, newcTrailer } from "../../formats/cpio.js";
import { encodeGpt, LINUX_FILESYSTEM_GUID, parseGpt, crc32 } from "../../formats/gpt.js";
import { encodeMbr, parseMbr } from "../../formats/mbr.js";
import { MEDIA_TYPES } from "../../formats/oci.js";
import { encodeTarHeader, paddingFor, tarTrailer, TarFormatError, TarParser, type TarEntryType } from "../../formats/tar.js";
import { pullImage, parseImageReference, RegistryError } from "../../stdlib/oci/registry.js";
import { tempDir } from "../helpers.js";
import { startWatchdog, type Watchdog } from "./watchdog.js";

const SEED = Number(process.env.OSBUILD_PROPERTY_SEED ?? 9090);
const RUNS = 300;

let watchdog: Watchdog;
/** How many inputs each reader read and refused, and its refusals by message: the generators must reach both. */
const outcomes = new Map<string, { read: number; refused: Map<string, number> }>();
beforeAll(() => {
  watchdog = startWatchdog(10_000);
});
afterAll(async () => {
  await watchdog.stop();
  for (const [label, { read, refused }] of outcomes) {
    const reasons = [...refused].sort((a, b) => b[1] - a[1]);
    console.log(`${label}: ${read} read, ${reasons.reduce((sum, [, count]) => sum + count, 0)} refused (${reasons.length} distinct reasons; most often: ${reasons.slice(0, 3).map(([reason, count]) => `${count}× ${reason}`).join("; ")})`);
    expect(read, label).toBeGreaterThan(0);
    expect(refused.size, label).toBeGreaterThan(1);
  }
});

function tally(label: string, refusal?: string): void {
  const entry = outcomes.get(label) ?? { read: 0, refused: new Map<string, number>() };
  outcomes.set(label, entry);
  if (refusal === undefined) entry.read++;
  else {
    const reason = refusal.replace(/'[^']*'|"[^"]*"|\d+/g, "…").slice(0, 70);
    entry.refused.set(reason, (entry.refused.get(reason) ?? 0) + 1);
  }
}

/** Runs `parse`, which must succeed or throw what `clean` accepts; anything else fails the property. */
function parsesOrRefuses(label: string, input: Uint8Array, parse: () => void, clean: (error: unknown) => boolean): void {
  watchdog.beat(label, input);
  try {
    parse();
  } catch (error) {
    if (!clean(error)) throw new Error(`${label}: not a clean refusal: ${error instanceof Error ? `${error.name}: ${error.message}\n${error.stack}` : String(error)}`);
    tally(label, (error as Error).message);
    return;
  }
  tally(label);
}

/** An error the module threw on purpose: not a TypeError, not one of Node's own (they have a code). */
function deliberate(error: unknown, message: RegExp): boolean {
  return error instanceof Error && !(error instanceof TypeError) && (error as NodeJS.ErrnoException).code === undefined && message.test(error.message);
}

/** Splits `bytes` into chunks at the given cut points (streaming readers must not care). */
function chunked(bytes: Buffer, cuts: readonly number[]): Buffer[] {
  const points = [...new Set(cuts.map((cut) => cut % (bytes.length + 1)))].sort((a, b) => a - b);
  const chunks: Buffer[] = [];
  let start = 0;
  for (const point of [...points, bytes.length]) {
    if (point > start) chunks.push(bytes.subarray(start, point));
    start = Math.max(start, point);
  }
  return chunks;
}

type Mutation = { kind: "flip"; at: number; value: number } | { kind: "truncate"; at: number } | { kind: "field"; at: number; text: string } | { kind: "insert"; at: number; bytes: Uint8Array };

const mutation = (fieldText: fc.Arbitrary<string>): fc.Arbitrary<Mutation> =>
  fc.oneof(
    fc.record({ kind: fc.constant("flip" as const), at: fc.nat(), value: fc.integer({ min: 0, max: 255 }) }),
    fc.record({ kind: fc.constant("truncate" as const), at: fc.nat() }),
    fc.record({ kind: fc.constant("field" as const), at: fc.nat(), text: fieldText }),
    fc.record({ kind: fc.constant("insert" as const), at: fc.nat(), bytes: fc.uint8Array({ maxLength: 600 }) }),
  );

/** Applies mutations; `fixup` repairs checksums afterwards, so that they reach the deeper checks. */
function mutate(valid: Buffer, mutations: readonly Mutation[], fixup: (bytes: Buffer) => void, fieldAt?: (at: number, bytes: Buffer) => number): Buffer {
  let bytes = Buffer.from(valid);
  for (const change of mutations) {
    if (bytes.length === 0) break;
    const at = change.at % bytes.length;
    if (change.kind === "flip") bytes[at] = change.value;
    else if (change.kind === "truncate") bytes = bytes.subarray(0, at);
    else if (change.kind === "insert") bytes = Buffer.concat([bytes.subarray(0, at), Buffer.from(change.bytes), bytes.subarray(at)]);
    else {
      const where = fieldAt ? fieldAt(at, bytes) : at;
      if (where < bytes.length) bytes.write(change.text, where, "latin1");
    }
  }
  fixup(bytes);
  return bytes;
}

// ---------------------------------------------------------------------------
// tar

const TAR_TYPES: TarEntryType[] = ["file", "dir", "symlink", "hardlink", "char", "block", "fifo"];
const nameBytes = fc.uint8Array({ minLength: 1, maxLength: 160 }).map((bytes) => Buffer.from(bytes.map((byte) => (byte === 0 || byte === 0x2f ? 0x61 : byte))).toString("latin1"));

const tarEntry = fc.record({
  path: fc.oneof(nameBytes, fc.string({ minLength: 1, maxLength: 120 }).map((name) => name.replace(/\0/g, "x") || "x")),
  type: fc.constantFrom(...TAR_TYPES),
  mode: fc.integer({ min: 0, max: 0o7777 }),
  uid: fc.oneof(fc.integer({ min: 0, max: 65535 }), fc.constant(0xfffffffe)),
  gid: fc.integer({ min: 0, max: 0x7fffffff }),
  mtime: fc.integer({ min: -(2 ** 33), max: 2 ** 34 }),
  data: fc.uint8Array({ maxLength: 1500 }),
  linkTarget: fc.string({ maxLength: 150 }),
  xattr: fc.option(fc.uint8Array({ maxLength: 40 })),
});

type TarEntrySpec = typeof tarEntry extends fc.Arbitrary<infer T> ? T : never;

function tarArchive(entries: readonly TarEntrySpec[]): Buffer {
  const parts: Buffer[] = [];
  for (const entry of entries) {
    const size = entry.type === "file" ? entry.data.length : 0;
    parts.push(
      encodeTarHeader({
        path: entry.path,
        type: entry.type,
        mode: entry.mode,
        uid: entry.uid,
        gid: entry.gid,
        size,
        mtime: entry.mtime,
        linkTarget: entry.type === "symlink" || entry.type === "hardlink" ? entry.linkTarget : undefined,
        devMajor: entry.type === "char" || entry.type === "block" ? entry.mode : undefined,
        devMinor: entry.type === "char" || entry.type === "block" ? entry.uid & 0xfffff : undefined,
        xattrs: entry.xattr ? { "user.fuzz": Buffer.from(entry.xattr) } : undefined,
      }),
    );
    if (size > 0) parts.push(Buffer.from(entry.data), Buffer.alloc(paddingFor(size)));
  }
  parts.push(tarTrailer());
  return Buffer.concat(parts);
}

/** Recomputes every header block's checksum that looks like a header (ustar magic). */
function fixTarChecksums(bytes: Buffer): void {
  for (let offset = 0; offset + 512 <= bytes.length; offset += 512) {
    const block = bytes.subarray(offset, offset + 512);
    if (block.toString("latin1", 257, 262) !== "ustar") continue;
    block.fill(0x20, 148, 156);
    let sum = 0;
    for (const byte of block) sum += byte;
    block.write(`${sum.toString(8).padStart(6, "0")}\0 `, 148, 8, "latin1");
  }
}

/** A mutation of a numeric field lands on one of the ustar number fields of the block it hits. */
const TAR_FIELDS = [100, 108, 116, 124, 136, 329, 337];
const tarFieldAt = (at: number): number => Math.floor(at / 512) * 512 + TAR_FIELDS[at % TAR_FIELDS.length]!;
const tarNumberText = fc.oneof(
  fc.constantFrom("77777777777\0", "99999999\0", "-0000001\0", " 1 2 3 \0", "\x80\0\0\0\0\0\0\0\0\0\0\x01", "\xff\xff\xff\xff\xff\xff\xff\xff", "\x80\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff", "0x10\0"),
  fc.stringMatching(/^[0-7 ]{1,11}$/),
  fc.string({ maxLength: 12 }),
);

function parseTar(chunks: readonly Buffer[]): void {
  let dataBytes = 0;
  let declared = 0;
  const parser = new TarParser({
    onEntry: (header) => {
      expect(Number.isSafeInteger(header.size) && header.size >= 0).toBe(true);
      expect(header.mode).toBeLessThanOrEqual(0o7777);
      expect(Number.isSafeInteger(header.uid) && header.uid >= 0 && Number.isSafeInteger(header.gid) && header.gid >= 0).toBe(true);
      expect(Number.isSafeInteger(header.mtime)).toBe(true);
      declared += header.type === "file" ? header.size : 0;
    },
    onData: (chunk) => (dataBytes += chunk.length),
  });
  for (const chunk of chunks) if (!parser.ended) parser.write(chunk);
  parser.end();
  expect(dataBytes).toBe(declared); // a complete archive delivered exactly what its headers said
}

const tarClean = (error: unknown): boolean => error instanceof TarFormatError;

describe("the tar reader", () => {
  it("reads or refuses random bytes", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 4096 }), fc.array(fc.nat(), { maxLength: 5 }), (bytes, cuts) => {
        const input = Buffer.from(bytes);
        parsesOrRefuses("tar", input, () => parseTar(chunked(input, cuts)), tarClean);
      }),
      { seed: SEED, numRuns: RUNS },
    );
  });

  it("reads or refuses random header blocks with a valid checksum", () => {
    fc.assert(
      fc.property(fc.array(fc.uint8Array({ minLength: 512, maxLength: 512 }), { minLength: 1, maxLength: 4 }), (blocks) => {
        const input = Buffer.concat(blocks.map((block) => Buffer.from(block)));
        for (let offset = 0; offset < input.length; offset += 512) input.write("ustar\u000000", offset + 257, "latin1");
        fixTarChecksums(input);
        parsesOrRefuses("tar", input, () => parseTar([input]), tarClean);
      }),
      { seed: SEED, numRuns: RUNS },
    );
  });

  it("reads or refuses mutated archives (flips, truncations, huge and malformed numbers)", () => {
    fc.assert(
      fc.property(fc.array(tarEntry, { minLength: 1, maxLength: 6 }), fc.array(mutation(tarNumberText), { minLength: 1, maxLength: 4 }), fc.array(fc.nat(), { maxLength: 4 }), (entries, mutations, cuts) => {
        const input = mutate(tarArchive(entries), mutations, fixTarChecksums, tarFieldAt);
        parsesOrRefuses("tar", input, () => parseTar(chunked(input, cuts)), tarClean);
      }),
      { seed: SEED, numRuns: RUNS },
    );
  });
});

// ---------------------------------------------------------------------------
// cpio

const CPIO_TYPES = ["file", "dir", "symlink", "char", "block", "fifo"] as const;
const cpioEntry = fc.record({
  name: nameBytes,
  type: fc.constantFrom(...CPIO_TYPES),
  mode: fc.integer({ min: 0, max: 0o7777 }),
  uid: fc.nat(),
  nlink: fc.integer({ min: 1, max: 3 }),
  data: fc.uint8Array({ maxLength: 1200 }),
});

function cpioArchive(entries: ReadonlyArray<{ name: string; type: (typeof CPIO_TYPES)[number]; mode: number; uid: number; nlink: number; data: Uint8Array }>, trailers: number): Buffer {
  const parts: Buffer[] = [];
  let ino = 1;
  for (const entry of entries) {
    const data = entry.type === "file" || entry.type === "symlink" ? Buffer.from(entry.data.length > 0 || entry.type === "file" ? entry.data : Buffer.from("t")) : Buffer.alloc(0);
    parts.push(encodeNewcHeader({ name: entry.name, type: entry.type, mode: entry.mode, uid: entry.uid, gid: entry.uid, nlink: entry.nlink, mtime: entry.uid, size: data.length, ino: ino++, rdevMajor: entry.mode, rdevMinor: entry.nlink }), data, Buffer.alloc(newcPadding(data.length)));
  }
  for (let i = 0; i < trailers; i++) parts.push(newcTrailer(), Buffer.alloc(512 - (Buffer.concat(parts).length % 512)));
  return Buffer.concat(parts);
}

/** A mutated field lands on one of a header's 13 hex fields, when the byte hit is inside a header. */
const cpioFieldAt = (at: number, bytes: Buffer): number => {
  const magic = bytes.lastIndexOf("0707", at, "latin1");
  return magic < 0 ? at : magic + 6 + 8 * (at % 13);
};
const hexText = fc.oneof(fc.constantFrom("ffffffff", "00000000", "7fffffff", "0000000g", "-0000001", "00001000", "00000001"), fc.stringMatching(/^[0-9a-fA-F]{8}$/));

function parseCpio(chunks: readonly Buffer[]): void {
  let dataBytes = 0;
  let declared = 0;
  const parser = new CpioParser({
    onEntry: (header) => {
      expect(header.name.length).toBeGreaterThan(-1);
      declared += header.type === "file" ? header.size : 0;
    },
    onData: (chunk) => (dataBytes += chunk.length),
  });
  for (const chunk of chunks) {
    if (parser.stopped) break;
    parser.write(chunk);
  }
  parser.end();
  if (!parser.stopped) expect(dataBytes).toBe(declared);
}

const cpioClean = (error: unknown): boolean => error instanceof CpioFormatError;

describe("the cpio reader", () => {
  it("reads or refuses random bytes, with and without a newc magic", () => {
    fc.assert(
      fc.property(fc.boolean(), fc.uint8Array({ maxLength: 2048 }), fc.array(fc.nat(), { maxLength: 5 }), (magic, bytes, cuts) => {
        const input = Buffer.concat([Buffer.from(magic ? "070701" : ""), Buffer.from(bytes)]);
        parsesOrRefuses("cpio", input, () => parseCpio(chunked(input, cuts)), cpioClean);
      }),
      { seed: SEED, numRuns: RUNS },
    );
  });

  it("reads or refuses mutated archives (flips, truncations, huge and malformed fields)", () => {
    fc.assert(
      fc.property(fc.array(cpioEntry, { minLength: 1, maxLength: 6 }), fc.integer({ min: 0, max: 2 }), fc.array(mutation(hexText), { minLength: 1, maxLength: 4 }), fc.array(fc.nat(), { maxLength: 4 }), (entries, trailers, mutations, cuts) => {
        const input = mutate(cpioArchive(entries, trailers), mutations, () => undefined, cpioFieldAt);
        parsesOrRefuses("cpio", input, () => parseCpio(chunked(input, cuts)), cpioClean);
      }),
      { seed: SEED, numRuns: RUNS },
    );
  });
});

// ---------------------------------------------------------------------------
// MBR and GPT

describe("the partition table readers", () => {
  const mbrClean = (error: unknown): boolean => deliberate(error, /MBR|sector 0/);
  const gptClean = (error: unknown): boolean => deliberate(error, /GPT|LBA|beyond the .*image|entry array|header/);

  it("MBR: reads or refuses random sectors (with and without the 55 AA signature) and short buffers", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 600 }), fc.boolean(), (bytes, signed) => {
        const sector = Buffer.from(bytes);
        if (signed && sector.length >= 512) sector.set([0x55, 0xaa], 510);
        parsesOrRefuses("mbr", sector, () => {
          const mbr = parseMbr(sector);
          for (const partition of mbr.partitions) expect(partition.startLba + partition.sizeLba).toBeLessThanOrEqual(2 * 2 ** 32);
        }, mbrClean);
      }),
      { seed: SEED, numRuns: RUNS },
    );
  });

  it("MBR: reads or refuses mutated tables", () => {
    fc.assert(
      fc.property(fc.array(fc.record({ startLba: fc.integer({ min: 1, max: 1 << 20 }), sizeLba: fc.integer({ min: 1, max: 1 << 20 }) }), { maxLength: 4 }), fc.array(mutation(fc.string({ maxLength: 8 })), { maxLength: 4 }), (layout, mutations) => {
        let next = 1;
        const partitions = layout.map(({ sizeLba }) => {
          const partition = { startLba: next, sizeLba, type: 0x83 };
          next += sizeLba;
          return partition;
        });
        const sector = mutate(encodeMbr(partitions, { diskSignature: 0x12345678 }), mutations, () => undefined);
        parsesOrRefuses("mbr", sector, () => parseMbr(sector), mbrClean);
      }),
      { seed: SEED, numRuns: RUNS },
    );
  });

  /** A GPT on a small disk, as one buffer. */
  function gptImage(partitions: number): Buffer {
    const disk = Buffer.alloc(2 * 1024 * 1024);
    const entries = Array.from({ length: partitions }, (_, index) => ({
      firstLba: 2048 + index * 100,
      lastLba: 2048 + index * 100 + 99,
      typeGuid: LINUX_FILESYSTEM_GUID,
      uniqueGuid: `0000000${index}-0000-4000-8000-000000000000`,
      name: `part${index}`,
    }));
    const gpt = encodeGpt(disk.length, entries, { diskGuid: "12345678-1234-4234-8234-123456789abc" });
    gpt.primary.copy(disk, 0);
    gpt.backup.copy(disk, gpt.backupOffset);
    return disk;
  }

  /** Puts right the CRCs of the header at `lba` (entry array first, then the header). */
  function fixGptCrcs(disk: Buffer, lba: number): void {
    const header = disk.subarray(lba * 512, lba * 512 + 512);
    if (header.toString("latin1", 0, 8) !== "EFI PART") return;
    const size = header.readUInt32LE(12);
    const entriesLba = Number(header.readBigUInt64LE(72));
    const entriesBytes = header.readUInt32LE(80) * header.readUInt32LE(84);
    if (entriesLba * 512 + entriesBytes <= disk.length) header.writeUInt32LE(crc32(disk.subarray(entriesLba * 512, entriesLba * 512 + entriesBytes)), 88);
    if (size >= 92 && size <= 512) {
      header.writeUInt32LE(0, 16);
      header.writeUInt32LE(crc32(header.subarray(0, size)), 16);
    }
  }

  const GPT_FIELDS = [8, 12, 24, 32, 40, 48, 72, 80, 84]; // revision, header size, LBAs, entry array
  const gptNumber = fc.oneof(fc.constantFrom(0, 1, 2, 33, 92, 128, 0xffffffff, 2 ** 31), fc.nat());

  it("GPT: reads or refuses headers and entry arrays with random fields and valid CRCs", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 4 }),
        fc.array(fc.record({ field: fc.constantFrom(...GPT_FIELDS), value: gptNumber, high: fc.boolean() }), { maxLength: 4 }),
        fc.array(fc.record({ at: fc.integer({ min: 1024, max: 1024 + 128 * 6 }), value: fc.integer({ min: 0, max: 255 }) }), { maxLength: 8 }),
        fc.integer({ min: 0, max: 2 * 1024 * 1024 }),
        (partitions, fields, entryBytes, keep) => {
          const disk = gptImage(partitions);
          for (const { field, value, high } of fields) {
            if (field === 8 || field === 12 || field === 80 || field === 84) disk.writeUInt32LE(value >>> 0, 512 + field);
            else disk.writeBigUInt64LE(BigInt(value) + (high ? 1n << 62n : 0n), 512 + field);
          }
          for (const { at, value } of entryBytes) disk[at] = value;
          fixGptCrcs(disk, 1);
          const image = disk.subarray(0, Math.max(keep, 1024));
          parsesOrRefuses("gpt", image, () => parseGpt(image), gptClean);
          parsesOrRefuses("gpt", image, () => parseGpt((offset, length) => {
            if (offset + length > image.length) throw new RangeError(`read of ${length} bytes at ${offset} is beyond the ${image.length}-byte image`);
            return image.subarray(offset, offset + length);
          }), gptClean);
        },
      ),
      { seed: SEED, numRuns: RUNS },
    );
  });

  it("GPT: reads or refuses random images", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 20_000 }), fc.boolean(), (bytes, signed) => {
        const image = Buffer.from(bytes);
        if (signed && image.length >= 1024) {
          image.write("EFI PART", 512, "latin1");
          fixGptCrcs(image, 1);
        }
        parsesOrRefuses("gpt", image, () => parseGpt(image), gptClean);
      }),
      { seed: SEED, numRuns: RUNS },
    );
  });
});

// ---------------------------------------------------------------------------
// OCI documents, served by a registry of our own

describe("the OCI document readers (image pulls from a registry that serves anything)", () => {
  let server: Server;
  let registry: string;
  let downloads: string;
  /** path → what the registry answers. */
  const routes = new Map<string, { type: string; body: Buffer }>();

  beforeAll(async () => {
    downloads = tempDir("oci-fuzz");
    server = createServer((request, response) => {
      const route = routes.get(request.url ?? "");
      if (!route) {
        response.writeHead(404).end();
        return;
      }
      response.writeHead(200, { "content-type": route.type, "content-length": route.body.length }).end(route.body);
    });
    server.listen(0, "127.0.0.1");
    await once(server, "listening");
    registry = `127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

  const digestOf = (bytes: Buffer): string => `sha256:${createHash("sha256").update(bytes).digest("hex")}`;
  const blob = (body: Buffer): { digest: string; size: number } => {
    const digest = digestOf(body);
    routes.set(`/v2/fuzz/image/blobs/${digest}`, { type: "application/octet-stream", body });
    return { digest, size: body.length };
  };

  /** A valid single-layer image: its manifest as an object to mutate. */
  function validManifest(): Record<string, unknown> {
    const config = blob(Buffer.from(JSON.stringify({ architecture: "amd64", os: "linux", rootfs: { type: "layers", diff_ids: [] } })));
    const layer = blob(Buffer.alloc(1024));
    return { schemaVersion: 2, mediaType: MEDIA_TYPES.manifest, config: { mediaType: MEDIA_TYPES.config, ...config }, layers: [{ mediaType: MEDIA_TYPES.layerTar, ...layer }] };
  }

  /** Sets the value at a random path of a JSON document (creating objects on the way). */
  function setAt(document: unknown, path: readonly string[], value: unknown): unknown {
    if (path.length === 0) return value;
    const object: Record<string, unknown> = typeof document === "object" && document !== null ? (Array.isArray(document) ? { ...document } : { ...(document as Record<string, unknown>) }) : {};
    object[path[0]!] = setAt(object[path[0]!], path.slice(1), value);
    return Array.isArray(document) ? Object.assign([...document], object) : object;
  }

  const KEYS = ["mediaType", "config", "layers", "manifests", "0", "1", "digest", "size", "platform", "os", "architecture", "variant", "schemaVersion", "annotations", "__proto__", "constructor"];
  const oddValue = fc.oneof(fc.jsonValue({ maxDepth: 2 }), fc.constantFrom(-1, 1.5, 1e300, 2 ** 53, "sha256:" + "0".repeat(64), "sha256:../../etc", MEDIA_TYPES.index, MEDIA_TYPES.manifest, null, [], {}));
  const CONTENT_TYPES = [MEDIA_TYPES.manifest, MEDIA_TYPES.index, MEDIA_TYPES.dockerManifest, MEDIA_TYPES.dockerManifestList, "application/json", "", "text/html"];

  async function pull(tag: string): Promise<void> {
    const reference = `${registry}/fuzz/image:${tag}`;
    watchdog.beat("oci", Buffer.from(JSON.stringify([...routes])));
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`pull of ${reference} took more than 10 s`)), 10_000)));
    try {
      await Promise.race([pullImage(reference, { architecture: "amd64", downloadDir: join(downloads, tag) }), timeout]);
      tally("oci");
    } catch (error) {
      if (!(error instanceof RegistryError)) throw new Error(`not a clean refusal: ${error instanceof Error ? `${error.name}: ${error.message}\n${error.stack}` : String(error)}`);
      tally("oci", error.message.replace(registry, "REGISTRY"));
    } finally {
      clearTimeout(timer);
    }
  }

  let pulls = 0;

  it("pulls or refuses random documents under any media type", async () => {
    await fc.assert(
      fc.asyncProperty(fc.oneof(fc.jsonValue({ maxDepth: 4 }).map((value) => JSON.stringify(value)), fc.string({ maxLength: 200 })), fc.constantFrom(...CONTENT_TYPES), async (text, type) => {
        const tag = `t${pulls++}`;
        routes.set(`/v2/fuzz/image/manifests/${tag}`, { type, body: Buffer.from(text) });
        await pull(tag);
      }),
      { seed: SEED, numRuns: 200 },
    );
  });

  it("pulls or refuses manifests and indexes with random values in random places", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.boolean(),
        fc.array(fc.record({ path: fc.array(fc.constantFrom(...KEYS), { minLength: 1, maxLength: 4 }), value: oddValue }), { minLength: 1, maxLength: 3 }),
        fc.constantFrom(...CONTENT_TYPES),
        async (asIndex, changes, type) => {
          const tag = `m${pulls++}`;
          let manifest: unknown = validManifest();
          let top: unknown;
          if (asIndex) {
            const bytes = Buffer.from(JSON.stringify(manifest));
            const digest = digestOf(bytes);
            routes.set(`/v2/fuzz/image/manifests/${digest}`, { type: MEDIA_TYPES.manifest, body: bytes });
            top = { schemaVersion: 2, mediaType: MEDIA_TYPES.index, manifests: [{ mediaType: MEDIA_TYPES.manifest, digest, size: bytes.length, platform: { os: "linux", architecture: "amd64" } }] };
            for (const { path, value } of changes) top = setAt(top, path, value);
          } else {
            for (const { path, value } of changes) manifest = setAt(manifest, path, value);
            top = manifest;
          }
          routes.set(`/v2/fuzz/image/manifests/${tag}`, { type, body: Buffer.from(JSON.stringify(top)) });
          await pull(tag);
        },
      ),
      { seed: SEED, numRuns: 200 },
    );
  });

  it("parses or refuses random image references", () => {
    fc.assert(
      fc.property(fc.oneof(fc.string({ maxLength: 80 }), fc.stringMatching(/^[a-z0-9.:/@_-]{0,40}$/)), (reference) => {
        parsesOrRefuses("reference", Buffer.from(reference), () => parseImageReference(reference), (error) => error instanceof RegistryError);
      }),
      { seed: SEED, numRuns: RUNS },
    );
  });
});
