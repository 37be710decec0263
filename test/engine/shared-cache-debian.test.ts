// The shared cache with the default config (a real Debian base from mmdebstrap) and a real
// registry (Debian's docker-registry on 127.0.0.1): two machines, played by two empty cache
// directories, one pushing and the other pulling; Basic and token auth with the credentials
// container tools keep; a tampered registry; an agent change; a registry that dies half-way
// through a push; two pushes at once; osbuild push; cache ls/prune and explain of a registry.
// The default config is built from scratch once, by the first machine; everything else reuses it.

import { createHash } from "node:crypto";
import { chmodSync, existsSync, readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join, relative } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { entryTag } from "../../engine/remote/format.js";
import type { ActionRecord } from "../../engine/build.js";
import type { CacheKey } from "../../engine/key.js";
import { Store } from "../../engine/store.js";
import { registryBlobPath, startCountingProxy, startRegistry, type TestRegistry } from "../oci-registry-harness.js";
import { osbuild, REPO, sh, statuses, tempDir, writeFiles, type RunResult } from "../helpers.js";

const CONFIG = join(REPO, "osbuild.config.ts");
const STEPS = ["fetch-base", "provision", "install-agent", "mk-cpio", "mk-ext4"];
/** Where osbuild finds the programs steps run, with a stand-in directory first. */
const toolPath = (first: string): string => `${first}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin`;
type Events = RunResult["events"];

/**
 * Two stand-ins for mmdebstrap, first in the tools' path (OSBUILD_PATH): each logs every call. One runs the real
 * mmdebstrap; the other only prints its version (the cache key holds it) and fails any
 * other call, so that a build that wanted to bootstrap would fail.
 */
function mmdebstrapShims(): { runs: { bin: string; log: string }; refuses: { bin: string; log: string } } {
  const make = (name: string, refuse: boolean): { bin: string; log: string } => {
    const bin = tempDir(`shim-${name}`);
    const log = join(bin, "calls.log");
    writeFileSync(log, "");
    const script = [
      "#!/bin/sh",
      `printf '%s\\n' "$*" >> ${log}`,
      'case "$1" in --version) exec /usr/bin/mmdebstrap "$@" ;; esac',
      refuse ? "echo 'this machine must not bootstrap: the shared cache has the base' >&2; exit 97" : 'exec /usr/bin/mmdebstrap "$@"',
      "",
    ].join("\n");
    writeFileSync(join(bin, "mmdebstrap"), script);
    chmodSync(join(bin, "mmdebstrap"), 0o755);
    return { bin, log };
  };
  return { runs: make("runs", false), refuses: make("refuses", true) };
}

function calls(log: string): string[] {
  return readFileSync(log, "utf8").split("\n").filter((line) => line !== "");
}

function sha256(path: string): string {
  return createHash("sha256").update(readFileSync(path)).digest("hex");
}

/** Every file of an output directory (initrd, image, the rootfs layout's files) by path, with its sha256. */
function outputDigests(dir: string): Record<string, string> {
  const digests: Record<string, string> = {};
  const walk = (path: string): void => {
    if (statSync(path).isDirectory()) for (const name of readdirSync(path).sort()) walk(join(path, name));
    else digests[relative(dir, path)] = sha256(path);
  };
  walk(dir);
  return digests;
}

function stepEvents(result: RunResult): Events {
  return result.events.filter((event) => event.type === "step");
}

/** Each step's status and the registry it came from (steps that run at once finish in any order). */
function origins(result: RunResult): Record<string, [unknown, unknown]> {
  return Object.fromEntries(stepEvents(result).map((event) => [event.id, [event.status, event.remote]]));
}

function everyStep(ids: readonly string[], status: string, from: string | undefined): Record<string, [unknown, unknown]> {
  return Object.fromEntries(ids.map((id) => [id, [status, from]]));
}

function warnings(result: RunResult): string[] {
  return result.events.filter((event) => event.type === "warning").map((event) => String(event.message));
}

function transfers(result: RunResult, direction: "push" | "pull"): { blobs: number; bytes: number; skipped: number } {
  const done = result.events.filter((event) => event.type === "transfer" && event.done && event.direction === direction);
  return done.reduce((total, event) => ({ blobs: total.blobs + Number(event.blobs), bytes: total.bytes + Number(event.bytes), skipped: total.skipped + Number(event.skipped) }), { blobs: 0, bytes: 0, skipped: 0 });
}

function keysOf(result: RunResult): Record<string, CacheKey> {
  return Object.fromEntries(stepEvents(result).map((event) => [event.id, event.key as CacheKey]));
}

/** The local record of a step result. */
async function recordIn(cache: string, key: string): Promise<ActionRecord> {
  const found = await Store.open(cache).getJson<ActionRecord>(`osbuild:action:${key}`);
  if (!found) throw new Error(`no record of ${key} in ${cache}`);
  return found.value;
}

/**
 * Whether the registry holds a whole entry for each key: the tag, its manifest, and every
 * blob it names, read straight from the registry's storage and hashed here.
 */
async function completeIn(registry: TestRegistry, repository: string, keys: readonly string[]): Promise<string[]> {
  const problems: string[] = [];
  for (const key of keys) {
    const response = await fetch(`http://${registry.address}/v2/${repository}/manifests/${entryTag(key as CacheKey)}`, { headers: { accept: "application/vnd.oci.image.manifest.v1+json" } });
    if (response.status !== 200) {
      problems.push(`${key}: tag answers ${response.status}`);
      continue;
    }
    const manifest = (await response.json()) as { config: { digest: string }; layers: Array<{ digest: string }> };
    for (const digest of [manifest.config.digest, ...manifest.layers.map((layer) => layer.digest)]) {
      const path = registryBlobPath(registry.storageDir, digest);
      if (!existsSync(path) || `sha256:${sha256(path)}` !== digest) problems.push(`${key}: blob ${digest} missing or wrong`);
    }
  }
  return problems;
}

describe("a cache shared through a registry, with the default config", () => {
  const registries: TestRegistry[] = [];
  let registry: TestRegistry;
  let shims: ReturnType<typeof mmdebstrapShims>;
  let machine1: string;
  let first: RunResult;
  let firstOut: string;
  let firstOutputs: Record<string, string>;
  let keys: Record<string, CacheKey>;
  let otherAgent: string;
  /** The second machine's cache, filled from the registry. */
  let machine2: { cache: string; out: string };
  const work = tempDir("shared-cache");

  const run = (cache: string, out: string, args: string[], options: { shim?: "runs" | "refuses"; env?: Record<string, string> } = {}): Promise<RunResult> => {
    const shim = shims[options.shim ?? "runs"];
    return osbuild(["run", "--json", "--config", CONFIG, "--cache-dir", cache, "--out", out, ...args], { cwd: work, env: { ...options.env, OSBUILD_PATH: toolPath(shim.bin) } });
  };
  const remote = (target: TestRegistry | { address: string }, repository = "kata"): string => `oci://${target.address}/${repository}`;
  const fresh = (label: string): { cache: string; out: string } => ({ cache: tempDir(`${label}-cache`), out: join(tempDir(`${label}-out`), "out") });

  beforeAll(async () => {
    shims = mmdebstrapShims();
    registry = await startRegistry({ deletes: true });
    registries.push(registry);
    machine1 = tempDir("machine1");
    firstOut = join(tempDir("machine1-out"), "out");
    first = await run(machine1, firstOut, ["--cache-to", remote(registry)]);
    if (first.code !== 0) throw new Error(`the first machine's build failed:\n${first.stdout}\n${first.stderr}`);
    firstOutputs = outputDigests(firstOut);
    keys = keysOf(first);
    otherAgent = join(work, "kata-agent-2");
    sh(`gcc -static -O1 -o ${otherAgent} ${join(REPO, "agent/test-agent.c")}`);
  }, 900_000);
  afterAll(() => Promise.all(registries.map((item) => item.stop())));

  it("builds every step on the first machine, through mmdebstrap, and pushes them all", () => {
    expect(statuses(first)).toEqual(Object.fromEntries(STEPS.map((id) => [id, "built"])));
    // The stand-in really was the mmdebstrap that ran: the proof below rests on it.
    expect(calls(shims.runs.log).some((line) => line.includes("bookworm"))).toBe(true);
    expect(warnings(first)).toEqual([]);
    const pushed = transfers(first, "push");
    expect(pushed.blobs).toBeGreaterThanOrEqual(10); // 3 layers, 2 blobs, 5 configs
    expect(pushed.bytes).toBeGreaterThan(statSync(join(firstOut, "image")).size);
  });

  it("gives a second machine every step from the registry, with no mmdebstrap run and the same bytes", async () => {
    machine2 = fresh("machine2");
    const { cache, out } = machine2;
    const second = await run(cache, out, ["--cache-from", remote(registry)], { shim: "refuses" });
    expect(second.code, second.stderr).toBe(0);
    expect(origins(second)).toEqual(everyStep(STEPS, "cached", remote(registry)));
    expect(second.events.some((event) => event.type === "step-start")).toBe(false);
    // mmdebstrap was asked for its version (it is part of fetch-base's key) and nothing else.
    expect(calls(shims.refuses.log).every((line) => line === "--version")).toBe(true);
    expect(keysOf(second)).toEqual(keys);
    expect(outputDigests(out)).toEqual(firstOutputs);
    expect(warnings(second)).toEqual([]);
    // The entries are local now: the next build needs no registry.
    const again = await run(cache, out, [], { shim: "refuses" });
    expect(origins(again)).toEqual(everyStep(STEPS, "cached", undefined));
  });

  it("keeps entries other tools read: a rootfs result is an OCI image, a blob an artifact of osbuild's type", async () => {
    const inspect = (tag: string): Record<string, unknown> =>
      JSON.parse(sh(`skopeo inspect --raw --tls-verify=false docker://${registry.address}/kata:${tag}`)) as Record<string, unknown>;
    const rootfs = inspect(entryTag(keys["install-agent"]!)) as { artifactType: string; config: { mediaType: string }; layers: Array<{ mediaType: string; digest: string }>; annotations: Record<string, string> };
    expect(rootfs.artifactType).toBe("application/vnd.osbuild.step-result.v1");
    expect(rootfs.config.mediaType).toBe("application/vnd.oci.image.config.v1+json");
    expect(rootfs.layers.map((layer) => layer.mediaType)).toEqual(Array(3).fill("application/vnd.oci.image.layer.v1.tar"));
    expect(rootfs.annotations).toMatchObject({ "dev.osbuild.key": keys["install-agent"], "dev.osbuild.step": "install-agent", "dev.osbuild.kind": "install-agent" });
    // skopeo takes it for an image: its layers are the rootfs output's.
    const copy = join(tempDir("skopeo-copy"), "image");
    sh(`skopeo copy --quiet --src-tls-verify=false docker://${registry.address}/kata:${entryTag(keys["install-agent"]!)} dir:${copy}`);
    const layers = rootfs.layers.map((layer) => layer.digest.slice("sha256:".length));
    for (const hex of layers) expect(sha256(join(copy, hex))).toBe(hex);
    expect(layers.every((hex) => existsSync(join(firstOut, "rootfs/blobs/sha256", hex)))).toBe(true);
    // The config holds the action record, key preimage included.
    const config = JSON.parse(sh(`skopeo inspect --config --raw --tls-verify=false docker://${registry.address}/kata:${entryTag(keys["mk-cpio"]!)}`)) as Record<string, { key: string; preimage: { kind: string } }>;
    expect(config["dev.osbuild.action"]!.key).toBe(keys["mk-cpio"]);
    expect(config["dev.osbuild.action"]!.preimage.kind).toBe("mk-cpio");
  });

  describe.each([
    ["htpasswd Basic auth, credentials in $REGISTRY_AUTH_FILE and ~/.docker/config.json", "htpasswd" as const],
    ["token auth, credentials from a credential helper named in config.json", "token" as const],
  ])("with %s", (_title, auth) => {
    let secured: TestRegistry;
    let pushEnv: Record<string, string>;
    let pullEnv: Record<string, string>;

    beforeAll(async () => {
      // Token auth here denies anonymous pulls: the pulling machine needs its credentials too.
      secured = await startRegistry(auth === "token" ? { auth: "token", denyPull: true } : { auth: "htpasswd" });
      registries.push(secured);
      const { username, password } = secured.credentials!;
      const home = tempDir(`home-${auth}`);
      if (auth === "htpasswd") {
        // Pushing: containers' auth.json through REGISTRY_AUTH_FILE; pulling: docker's config.json in HOME.
        const authFile = join(tempDir("auth"), "auth.json");
        writeFileSync(authFile, JSON.stringify({ auths: { [secured.address]: { auth: Buffer.from(`${username}:${password}`).toString("base64") } } }));
        writeFiles(home, { ".docker/config.json": JSON.stringify({ auths: { [`https://${secured.address}`]: { auth: Buffer.from(`${username}:${password}`).toString("base64") } } }) });
        pushEnv = { REGISTRY_AUTH_FILE: authFile, HOME: tempDir("no-home") };
        pullEnv = { HOME: home };
      } else {
        const helpers = tempDir("helpers");
        writeFiles(helpers, { "docker-credential-osbuild-test": `#!/bin/sh\nread server\n[ "$server" = "${secured.address}" ] || { echo "credentials not found in native keychain"; exit 1; }\nprintf '{"ServerURL":"%s","Username":"${username}","Secret":"${password}"}' "$server"\n` });
        chmodSync(join(helpers, "docker-credential-osbuild-test"), 0o755);
        writeFiles(home, { ".docker/config.json": JSON.stringify({ credHelpers: { [secured.address]: "osbuild-test" } }) });
        pushEnv = pullEnv = { HOME: home, PATH: `${helpers}:${process.env.PATH}` };
      }
    }, 60_000);

    it("pushes from the first machine and gives a second one the initrd without bootstrapping", async () => {
      const push = await run(machine1, firstOut, ["initrd", "--cache-to", remote(secured)], { env: pushEnv });
      expect(push.code, push.stderr).toBe(0);
      expect(warnings(push)).toEqual([]);
      expect(transfers(push, "push").blobs).toBeGreaterThanOrEqual(4);

      const { cache, out } = fresh(`pull-${auth}`);
      // Without an SBOM (which lists the rootfs under the initrd, from its layers), only the initrd is needed.
      const pull = await run(cache, out, ["initrd", "--no-sbom", "--cache-from", remote(secured)], { shim: "refuses", env: pullEnv });
      expect(pull.code, pull.stderr).toBe(0);
      expect(warnings(pull)).toEqual([]);
      expect(origins(pull)).toEqual(everyStep(STEPS.slice(0, 4), "cached", remote(secured)));
      expect(sha256(join(out, "initrd"))).toBe(firstOutputs.initrd);
      // Only what the initrd target needs came down: the initrd, not the rootfs layers below it.
      expect(transfers(pull, "pull").blobs).toBe(1);
    });

    it("says what to do when the credentials are missing", async () => {
      const list = await osbuild(["cache", "ls", remote(secured)], { cwd: work, env: { HOME: tempDir("empty-home"), REGISTRY_AUTH_FILE: join(tempDir(), "none.json") } });
      expect(list.code).toBe(1);
      expect(list.stderr).toContain(`access to kata on ${secured.address} was denied`);
      expect(list.stderr).toMatch(/found no credentials.*skopeo login/);
    });
  });

  it("refuses a blob tampered with in the registry's storage, builds that step here, and pushes it again", async () => {
    // A registry of its own: the one it damages keeps the damaged blob for good.
    const damaged = await startRegistry();
    registries.push(damaged);
    const filled = await run(machine1, firstOut, ["rootfs", "--cache-to", remote(damaged)]);
    expect(filled.code, filled.stderr).toBe(0);
    const record = await recordIn(machine1, keys.provision!);
    const layers = record.outputs.out!.kind === "rootfs" ? record.outputs.out!.layers : [];
    const provisionLayer = layers[layers.length - 1]!.digest;
    const stored = registryBlobPath(damaged.storageDir, provisionLayer);
    const bytes = readFileSync(stored);
    bytes[Math.floor(bytes.length / 2)]! ^= 0x20;
    writeFileSync(stored, bytes);

    const { cache, out } = fresh("tampered");
    const healing = await run(cache, out, ["rootfs", "--cache-from", remote(damaged), "--cache-to", remote(damaged)]);
    expect(healing.code, healing.stderr).toBe(0);
    expect(warnings(healing).some((message) => message.includes("refused its cache entry") && message.includes(provisionLayer))).toBe(true);
    // The last word on each step: provision built here, the rest from the registry.
    expect(statuses(healing)).toMatchObject({ provision: "built", "fetch-base": "cached", "install-agent": "cached" });
    expect(outputDigests(join(out, "rootfs"))).toEqual(outputDigests(join(firstOut, "rootfs")));
    expect(transfers(healing, "push").blobs).toBeGreaterThan(0);

    // The registry cannot replace its damaged copy (it keeps the first blob of a digest), so
    // the layer went up again compressed, under a digest of its own: the next machine is fine.
    const { cache: nextCache, out: nextOut } = fresh("after-repair");
    const next = await run(nextCache, nextOut, ["rootfs", "--cache-from", remote(damaged)], { shim: "refuses" });
    expect(next.code, next.stderr).toBe(0);
    expect(warnings(next)).toEqual([]);
    expect(stepEvents(next).map((event) => event.status)).toEqual(["cached", "cached", "cached"]);
    expect(outputDigests(join(nextOut, "rootfs"))).toEqual(outputDigests(join(firstOut, "rootfs")));
  });

  it("after an agent change, pushes only the new layer and the outputs (counted by a proxy)", async () => {
    const proxy = await startCountingProxy(registry.address);
    try {
      const changed = await run(machine1, join(tempDir("agent-out"), "out"), ["--set", `agent=${otherAgent}`, "--cache-to", remote(proxy)]);
      expect(changed.code, changed.stderr).toBe(0);
      expect(statuses(changed)).toEqual({ "fetch-base": "cached", provision: "cached", "install-agent": "built", "mk-cpio": "built", "mk-ext4": "built" });
      const changedKeys = keysOf(changed);
      const agentRecord = await recordIn(machine1, changedKeys["install-agent"]!);
      const agentLayers = agentRecord.outputs.out!.kind === "rootfs" ? agentRecord.outputs.out!.layers : [];
      const size = async (step: string): Promise<number> => {
        const output = (await recordIn(machine1, changedKeys[step]!)).outputs.out!;
        return output.kind === "blob" ? output.size : 0;
      };
      const needed = agentLayers[agentLayers.length - 1]!.size + (await size("mk-cpio")) + (await size("mk-ext4"));
      const sent = transfers(changed, "push");
      process.stderr.write(`agent change: needed ${needed} bytes; the proxy counted ${proxy.uploaded} bytes up, osbuild ${sent.bytes} in ${sent.blobs} blobs (${sent.skipped} already there)\n`);
      expect(proxy.uploaded).toBeGreaterThanOrEqual(needed);
      expect(proxy.uploaded).toBeLessThanOrEqual(needed * 1.01);
      expect(await completeIn(registry, "kata", Object.values(changedKeys))).toEqual([]);
    } finally {
      await proxy.stop();
    }
  });

  it("finishes the build when the registry dies half-way through a push, and the next push completes it", async () => {
    const dying = await startRegistry();
    registries.push(dying);
    let killed: Promise<void> | undefined;
    // Killed once 100 MB went up: the first layer is done by then, the disk image is not.
    const proxy = await startCountingProxy(dying.address, (bytes) => {
      if (bytes > 100e6 && !killed) killed = dying.kill();
    });
    try {
      const broken = await run(machine1, firstOut, ["--cache-to", remote(proxy)]);
      expect(broken.code, broken.stderr).toBe(0);
      expect(killed).toBeDefined();
      expect(warnings(broken).join("\n")).toMatch(/shared cache oci:\/\/.*the next build with --cache-to pushes what is missing/);
      await killed;
      await dying.start();
      proxy.reset();
      const resumed = await run(machine1, firstOut, ["--cache-to", remote(proxy)]);
      expect(resumed.code, resumed.stderr).toBe(0);
      expect(warnings(resumed)).toEqual([]);
      const sent = transfers(resumed, "push");
      process.stderr.write(`registry died: the next push sent ${proxy.uploaded} bytes (${sent.blobs} blobs; ${sent.skipped} were there)\n`);
      expect(sent.skipped).toBeGreaterThan(0);
      expect(await completeIn(dying, "kata", Object.values(keys))).toEqual([]);
    } finally {
      await proxy.stop();
    }
  });

  it("lets two builds push the same entries at once", async () => {
    const shared = await startRegistry();
    registries.push(shared);
    // Two caches that both hold every result: the first machine's, and the second's, filled from the registry.
    const { cache: other, out: otherOut } = machine2;
    const [a, b] = await Promise.all([run(machine1, firstOut, ["--cache-to", remote(shared)]), run(other, otherOut, ["--cache-to", remote(shared)], { shim: "refuses" })]);
    for (const result of [a, b]) {
      expect(result.code, result.stderr).toBe(0);
      expect(warnings(result)).toEqual([]);
    }
    expect(await completeIn(shared, "kata", Object.values(keys))).toEqual([]);
  });

  it("pushes a rootfs as an image that skopeo and fetchBase({ image }) pull, and a blob as an artifact", async () => {
    const image = `${registry.address}/kata-rootfs:v1`;
    const pushed = await osbuild(["push", "rootfs", `oci://${image}`, "--config", CONFIG, "--cache-dir", machine1], { cwd: work, env: { OSBUILD_PATH: toolPath(shims.refuses.bin) } });
    expect(pushed.code, pushed.stderr).toBe(0);
    const digest = pushed.stdout.trim();
    expect(digest).toMatch(/^sha256:[0-9a-f]{64}$/);
    const manifest = sh(`skopeo inspect --raw --tls-verify=false docker://${image}`);
    expect(`sha256:${createHash("sha256").update(manifest).digest("hex")}`).toBe(digest);
    const parsed = JSON.parse(manifest) as { config: { mediaType: string }; annotations: Record<string, string> };
    expect(parsed.config.mediaType).toBe("application/vnd.oci.image.config.v1+json");
    expect(parsed.annotations["dev.osbuild.key"]).toBe(keys["install-agent"]);
    expect(JSON.parse(sh(`skopeo inspect --tls-verify=false docker://${image}`))).toMatchObject({ Architecture: "amd64", Os: "linux" });
    // Its SBOM and provenance hang from it, through the referrers tag (docker-registry 2.8 has no referrers API).
    const referrers = JSON.parse(sh(`skopeo inspect --raw --tls-verify=false docker://${registry.address}/kata-rootfs:${digest.replace(":", "-")}`)) as { manifests: Array<{ artifactType: string; digest: string }> };
    expect(referrers.manifests.map((item) => item.artifactType).sort()).toEqual(["application/spdx+json", "application/vnd.in-toto+json"]);
    const sbomReferrer = JSON.parse(sh(`skopeo inspect --raw --tls-verify=false docker://${registry.address}/kata-rootfs@${referrers.manifests.find((item) => item.artifactType === "application/spdx+json")!.digest}`)) as { subject: { digest: string } };
    expect(sbomReferrer.subject.digest).toBe(digest);

    // Another config starts from it: fetchBase pulls it, and mkCpio finds its /sbin/init.
    const project = tempDir("from-image");
    writeFiles(project, {
      "osbuild.config.ts": `import { defineConfig, fetchBase, mkCpio } from "osbuild";\nexport default defineConfig(() => ({ initrd: mkCpio(fetchBase({ image: ${JSON.stringify(image)} }), { compression: "none" }) }));\n`,
    });
    const fromImage = await osbuild(["run", "--json", "--cache-dir", join(project, "cache")], { cwd: project });
    expect(fromImage.code, fromImage.stderr).toBe(0);
    expect(sh("cpio -i --quiet --to-stdout usr/sbin/init < out/initrd", project)).toContain("OSBUILD-TEST-AGENT");

    const artifact = `${registry.address}/kata-initrd:v1`;
    const blob = await osbuild(["push", "initrd", `oci://${artifact}`, "--annotation", "org.opencontainers.image.version=1.0", "--config", CONFIG, "--cache-dir", machine1], { cwd: work });
    expect(blob.code, blob.stderr).toBe(0);
    const described = JSON.parse(sh(`skopeo inspect --raw --tls-verify=false docker://${artifact}`)) as {
      artifactType: string;
      layers: Array<{ mediaType: string; digest: string; annotations: Record<string, string> }>;
      annotations: Record<string, string>;
    };
    expect(described.artifactType).toBe("application/vnd.osbuild.initrd.v1+gzip");
    expect(described.layers).toEqual([{ mediaType: "application/vnd.osbuild.initrd.v1+gzip", digest: `sha256:${firstOutputs.initrd}`, size: statSync(join(firstOut, "initrd")).size, annotations: { "org.opencontainers.image.title": "initrd" } }]);
    expect(described.annotations).toMatchObject({ "dev.osbuild.key": keys["mk-cpio"], "org.opencontainers.image.version": "1.0", "org.opencontainers.image.created": "2025-01-01T00:00:00.000Z" });
  });

  it("explains from the registry on a machine that never built, and lists and prunes it", async () => {
    const empty = tempDir("explain-cache");
    const explained = await osbuild(["explain", "mk-cpio", "--config", CONFIG, "--cache-dir", empty, "--cache-from", remote(registry)], { cwd: work, env: { OSBUILD_PATH: toolPath(shims.refuses.bin) } });
    expect(explained.code, explained.stderr).toBe(0);
    expect(explained.stdout).toMatch(new RegExp(`cached in ${remote(registry).replace(/[.]/g, "\\.")}: key ${keys["mk-cpio"]!.slice(0, 16)}`));
    // An agent no entry was built with: what changed, against the newest entry of the step there.
    const thirdAgent = join(work, "kata-agent-3");
    sh(`gcc -static -O0 -o ${thirdAgent} ${join(REPO, "agent/test-agent.c")}`);
    const changed = await osbuild(["explain", "install-agent", "--set", `agent=${thirdAgent}`, "--config", CONFIG, "--cache-dir", empty, "--cache-from", remote(registry)], {
      cwd: work,
      env: { OSBUILD_PATH: toolPath(shims.refuses.bin) },
    });
    expect(changed.stdout).toMatch(/will build: key .* is not in the cache nor in oci:/);
    expect(changed.stdout).toMatch(/the newest entry of this step in oci:.*what changed since:\n\s+option binary \(.*\): content changed/);

    const listed = await osbuild(["cache", "ls", remote(registry)], { cwd: work });
    expect(listed.code, listed.stderr).toBe(0);
    expect(listed.stdout).toMatch(/8 step results/); // the default 5, and 3 again after the agent change
    for (const id of STEPS) expect(listed.stdout).toContain(`${id} (${id})`);

    // What the config (with its default agent) still uses stays; the agent-changed entries go.
    const pruned = await osbuild(["cache", "prune", remote(registry), "--unused", "--config", CONFIG, "--cache-dir", empty], { cwd: work, env: { OSBUILD_PATH: toolPath(shims.refuses.bin) } });
    expect(pruned.code, pruned.stderr).toBe(0);
    expect(pruned.stdout).toContain("removed 3 of 8 step results");
    expect((await osbuild(["cache", "ls", remote(registry)], { cwd: work })).stdout).toMatch(/5 step results/);
    const all = await osbuild(["cache", "prune", remote(registry), "--all"], { cwd: work });
    expect(all.stdout).toContain("removed 5 of 5 step results");
    expect((await osbuild(["cache", "ls", remote(registry)], { cwd: work })).stdout).toMatch(/0 step results/);
  });
});
