// Provenance of the default config (a real Debian base from the mirror): `osbuild why` from
// the cache, the SPDX SBOM checked against the official schema and the rootfs's own dpkg
// status, and the SLSA provenance a clean rebuild must match. One build is shared by the
// file; verify-reproducible --provenance makes the second (clean) one.

import { createHash } from "node:crypto";
import { copyFileSync, existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { AGENT, REPO, osbuild, sh, tempDir, type RunResult } from "../helpers.js";
import { sha256Of, spdxValidator } from "../spdx.js";

interface SpdxPackage {
  SPDXID: string;
  name: string;
  versionInfo?: string;
  checksums?: Array<{ algorithm: string; checksumValue: string }>;
  downloadLocation: string;
  sourceInfo?: string;
  comment?: string;
}
interface SpdxDocument {
  name: string;
  documentNamespace: string;
  creationInfo: { created: string };
  packages: SpdxPackage[];
  files: Array<{ fileName: string; checksums: Array<{ algorithm: string; checksumValue: string }> }>;
  relationships: Array<{ spdxElementId: string; relationshipType: string; relatedSpdxElement: string }>;
}
interface WhyResult {
  resolvedPath: string;
  packedBy: { id: string } | null;
  history: Array<{ change: string; step: { id: string; kind: string; function: string; location: string }; origins: Array<Record<string, unknown> & { type: string }> }>;
  final: { type: string; mode: string; uid: number; gid: number; sha256?: string; linkTarget?: string } | null;
}

/** name → "version arch" of every installed package of a dpkg status file. */
function dpkgStatus(text: string): Map<string, string> {
  const installed = new Map<string, string>();
  for (const block of text.split(/\n\n+/)) {
    const field = (name: string): string | undefined => new RegExp(`^${name}: (.*)$`, "m").exec(block)?.[1];
    if (field("Status")?.endsWith(" installed")) installed.set(field("Package")!, `${field("Version")} ${field("Architecture")}`);
  }
  return installed;
}

describe("provenance of the default config", () => {
  let project: string;
  let cache: string;
  let initrdTree: string;
  let built: RunResult;

  const manifestDigest = (): string => (JSON.parse(readFileSync(join(project, "out/rootfs/index.json"), "utf8")) as { manifests: Array<{ digest: string }> }).manifests[0]!.digest;
  const why = async (target: string, path: string, extra: string[] = []): Promise<WhyResult> => {
    const result = await osbuild(["why", target, path, "--json", "--cache-dir", cache, ...extra], { cwd: project });
    expect(result.code, result.stderr).toBe(0);
    return JSON.parse(result.stdout) as WhyResult;
  };

  beforeAll(async () => {
    // The repository's own osbuild.config.ts, as a user has it, with the test agent at its default path.
    project = tempDir("provenance");
    cache = join(project, "cache");
    copyFileSync(join(REPO, "osbuild.config.ts"), join(project, "osbuild.config.ts"));
    mkdirSync(join(project, "build/agent"), { recursive: true });
    copyFileSync(AGENT, join(project, "build/agent/kata-agent"));
    built = await osbuild(["run", "--json", "--cache-dir", cache], { cwd: project });
    if (built.code !== 0) throw new Error(`build failed:\n${built.stdout}\n${built.stderr}`);
    initrdTree = tempDir("provenance-initrd");
    sh(`zcat ${join(project, "out/initrd")} | cpio -idm --quiet --no-absolute-filenames`, initrdTree);
  }, 600_000);

  it("why names installAgent for /sbin/init, with the agent's host path and sha256", async () => {
    const result = await why("image", "/sbin/init");
    expect(result.resolvedPath).toBe("/usr/sbin/init"); // /sbin → usr/sbin, resolved inside the tree
    expect(result.packedBy?.id).toBe("mk-ext4");
    expect(result.history.map((event) => [event.change, event.step.id])).toEqual([["added", "install-agent"]]);
    const [event] = result.history;
    expect(event!.step.function).toBe("installAgent");
    expect(event!.step.location).toMatch(/^osbuild\.config\.ts:\d+:\d+$/);
    expect(event!.origins).toContainEqual(expect.objectContaining({ type: "host-file", option: "binary", hostPath: "build/agent/kata-agent", sha256: sha256Of(join(project, "build/agent/kata-agent")) }));
    // Stripped on the way: the file in the image is not the host's, and why says what it is.
    expect(result.final).toMatchObject({ type: "file", mode: "0755", uid: 0, gid: 0, sha256: sha256Of(join(initrdTree, "sbin/init")) });
    const text = await osbuild(["why", "image", "sbin/init", "--cache-dir", cache], { cwd: project });
    expect(text.code).toBe(0);
    expect(text.stdout).toContain("added by install-agent (installAgent at osbuild.config.ts:");
    expect(text.stdout).toContain(`host file build/agent/kata-agent (sha256 ${sha256Of(join(project, "build/agent/kata-agent"))})`);
  });

  it("why names the base and the package chrony for /usr/sbin/chronyd, and provision for chrony.conf, which it changed after the package", async () => {
    const chronyd = await why("image", "usr/sbin/chronyd");
    expect(chronyd.history.map((event) => [event.change, event.step.id])).toEqual([["added", "fetch-base"]]);
    expect(chronyd.history[0]!.step.function).toBe("fetchBase");
    expect(chronyd.history[0]!.origins).toContainEqual(expect.objectContaining({ type: "package", database: "dpkg", name: "chrony", version: expect.stringMatching(/^4\./), architecture: "amd64" }));
    expect(chronyd.final).toMatchObject({ type: "file", sha256: sha256Of(join(initrdTree, "usr/sbin/chronyd")) });

    // chrony's install script writes chrony.conf (dpkg lists no such file), provision edits it.
    const conf = await why("initrd", "/etc/chrony/chrony.conf");
    expect(conf.packedBy?.id).toBe("mk-cpio");
    expect(conf.history.map((event) => [event.change, event.step.id])).toEqual([
      ["added", "fetch-base"],
      ["changed", "provision"],
    ]);
    expect(conf.history[0]!.origins).toContainEqual(expect.objectContaining({ type: "package", name: "chrony", inDirectory: "etc/chrony" }));
    expect(conf.history[1]!.origins).toEqual([{ type: "step" }]);
    expect(conf.final?.sha256).toBe(sha256Of(join(initrdTree, "etc/chrony/chrony.conf")));
  });

  it("why follows /bin into usr/bin, tells removed paths, and works without a network", async () => {
    // A network namespace of its own with nothing in it: why reads the cache alone.
    const offline = await osbuild(["why", "image", "/bin/sh", "--json", "--cache-dir", cache], { cwd: project, wrap: ["unshare", "--net"] });
    expect(offline.code, offline.stderr).toBe(0);
    const sh = JSON.parse(offline.stdout) as WhyResult;
    expect(sh.resolvedPath).toBe("/usr/bin/sh");
    expect(sh.history[0]!.origins).toContainEqual(expect.objectContaining({ type: "package", name: "dash" }));
    expect(sh.final).toMatchObject({ type: "symlink", linkTarget: "dash" });

    const status = await why("rootfs", "/var/lib/dpkg/status");
    expect(status.packedBy).toBeNull();
    expect(status.history.map((event) => [event.change, event.step.id])).toEqual([
      ["added", "fetch-base"],
      ["removed", "provision"],
    ]);
    expect(status.final).toBeNull();

    const missing = await osbuild(["why", "image", "/no/such/file", "--cache-dir", cache], { cwd: project });
    expect(missing.code).toBe(1);
    expect(missing.stderr).toContain("/no/such/file is not in image");
  });

  it("writes an SBOM that validates against SPDX 2.3 and lists the rootfs's dpkg status exactly", () => {
    const validate = spdxValidator();
    // The base layer of the rootfs still has dpkg's status (provision removes it above).
    const blob = (digest: string): string => join(project, "out/rootfs/blobs/sha256", digest.slice("sha256:".length));
    const manifest = JSON.parse(readFileSync(blob(manifestDigest()), "utf8")) as { layers: Array<{ digest: string }> };
    const installed = dpkgStatus(sh(`tar -xOf ${blob(manifest.layers[0]!.digest)} var/lib/dpkg/status`));
    expect(installed.size).toBeGreaterThan(50);
    for (const target of ["image", "initrd", "rootfs"]) {
      const sbom = JSON.parse(readFileSync(join(project, `out/${target}.spdx.json`), "utf8")) as SpdxDocument;
      expect(validate(sbom), target).toBeUndefined();
      expect(sbom.creationInfo.created).toBe("2025-01-01T00:00:00Z"); // the config's sourceDateEpoch
      const debs = sbom.packages.filter((pkg) => pkg.comment?.includes("dpkg database"));
      const listed = new Map(debs.map((pkg) => [pkg.name, `${pkg.versionInfo} ${/installed \(([^)]+)\)/.exec(pkg.comment!)?.[1]}`]));
      expect(listed).toEqual(installed);
      const chrony = debs.find((pkg) => pkg.name === "chrony")!;
      expect(chrony.sourceInfo).toMatch(/^built from the source package chrony 4\./);
      expect(chrony.downloadLocation).toMatch(/^http:\/\/\S+\/pool\/main\/c\/chrony\/chrony_4\.\S+_amd64\.deb$/);
      // the output, by sha256, described and containing the packages
      const output = sbom.packages[0]!;
      const digest = target === "rootfs" ? manifestDigest().slice("sha256:".length) : sha256Of(join(project, "out", target));
      expect(output.checksums).toEqual([{ algorithm: "SHA256", checksumValue: digest }]);
      expect(sbom.relationships).toContainEqual({ spdxElementId: "SPDXRef-DOCUMENT", relationshipType: "DESCRIBES", relatedSpdxElement: output.SPDXID });
      expect(sbom.relationships).toContainEqual({ spdxElementId: output.SPDXID, relationshipType: "CONTAINS", relatedSpdxElement: chrony.SPDXID });
      // the agent, and the file the host-file step added, with the image's sha256 of it
      const init = sha256Of(join(initrdTree, "sbin/init"));
      expect(sbom.packages).toContainEqual(expect.objectContaining({ name: "kata-agent", versionInfo: "unknown", checksums: [{ algorithm: "SHA256", checksumValue: init }] }));
      expect(sbom.files).toEqual([expect.objectContaining({ fileName: "./usr/sbin/init", checksums: expect.arrayContaining([{ algorithm: "SHA256", checksumValue: init }]) })]);
      // the mirror suites the base came from, each by its release file
      const mirrors = sbom.packages.filter((pkg) => pkg.SPDXID.startsWith("SPDXRef-Input-"));
      expect(mirrors.length).toBeGreaterThan(0);
      for (const mirror of mirrors) expect(mirror.downloadLocation).toMatch(/\/dists\/bookworm[a-z-]*\/InRelease$/);
      expect(mirrors.every((mirror) => mirror.checksums?.[0]?.algorithm === "SHA256")).toBe(true);
    }
  });

  it("writes provenance whose subjects are the outputs, and nothing when up to date or switched off", async () => {
    for (const target of ["image", "initrd"]) {
      const statement = JSON.parse(readFileSync(join(project, `out/${target}.intoto.json`), "utf8")) as {
        _type: string;
        predicateType: string;
        subject: Array<{ name: string; digest: { sha256: string } }>;
        predicate: { buildDefinition: { externalParameters: Record<string, unknown>; resolvedDependencies: Array<{ name: string; digest?: Record<string, string> }> }; runDetails: { builder: { version: Record<string, string> } } };
      };
      expect(statement._type).toBe("https://in-toto.io/Statement/v1");
      expect(statement.predicateType).toBe("https://slsa.dev/provenance/v1");
      expect(statement.subject).toEqual([{ name: target, digest: { sha256: sha256Of(join(project, "out", target)) } }]);
      expect(statement.predicate.buildDefinition.externalParameters).toMatchObject({ config: "osbuild.config.ts", parameters: { agent: "build/agent/kata-agent", init: "agent", release: "bookworm" }, sourceDateEpoch: 1735689600 });
      const dependencies = statement.predicate.buildDefinition.resolvedDependencies;
      expect(dependencies).toContainEqual(expect.objectContaining({ name: "config:osbuild.config.ts", digest: { sha256: sha256Of(join(project, "osbuild.config.ts")) } }));
      expect(dependencies).toContainEqual(expect.objectContaining({ name: "host:install-agent.binary", digest: { sha256: sha256Of(join(project, "build/agent/kata-agent")) } }));
      expect(dependencies.some((dependency) => dependency.name.startsWith("fetch-base:") && dependency.digest?.sha256)).toBe(true);
      expect(Object.keys(statement.predicate.runDetails.builder.version)).toEqual(expect.arrayContaining(["osbuild", "mmdebstrap", "strip"]));
    }
    const again = await osbuild(["run", "--json", "--cache-dir", cache], { cwd: project });
    expect(again.code).toBe(0);
    expect(again.events.filter((event) => event.type === "attestation")).toEqual([]);
    const off = await osbuild(["run", "--json", "--no-sbom", "--cache-dir", cache], { cwd: project });
    expect(off.code).toBe(0);
    expect(existsSync(join(project, "out/image.spdx.json"))).toBe(false); // an old SBOM never sits beside a newer image
    expect(existsSync(join(project, "out/image.intoto.json"))).toBe(true);
    const on = await osbuild(["run", "--json", "--cache-dir", cache], { cwd: project });
    expect(on.events.filter((event) => event.type === "attestation").map((event) => event.path)).toEqual(expect.arrayContaining([join(project, "out/image.spdx.json")]));
  });

  it("verify-reproducible --provenance rebuilds from nothing to the same outputs and SBOMs; a changed input fails it by name", async () => {
    const statements = ["image", "initrd"].flatMap((target) => ["--provenance", join(project, `out/${target}.intoto.json`)]);
    const verified = await osbuild(["verify-reproducible", ...statements, "--keep"], { cwd: project });
    expect(verified.code, `${verified.stdout}\n${verified.stderr}`).toBe(0);
    expect(verified.stdout).toContain(`image: matches its provenance (sha256 ${sha256Of(join(project, "out/image"))})`);
    expect(verified.stdout).toContain("reproducible: 2 target(s) rebuilt from their provenance match it");
    const kept = /kept (\S+)/.exec(verified.stderr)![1]!;
    for (const target of ["image", "initrd"]) {
      // the second clean build's SBOM: the same bytes
      expect(readFileSync(join(kept, `out/${target}.spdx.json`), "utf8")).toBe(readFileSync(join(project, `out/${target}.spdx.json`), "utf8"));
    }
    sh(`rm -rf ${kept}`);

    const agent = join(project, "build/agent/kata-agent");
    const original = readFileSync(agent);
    writeFileSync(agent, Buffer.concat([original, Buffer.from("changed")]));
    try {
      const changed = await osbuild(["verify-reproducible", ...statements], { cwd: project });
      expect(changed.code).toBe(1);
      expect(changed.stdout).toContain(`host:install-agent.binary (file://${agent}): sha256 ${createHash("sha256").update(original).digest("hex")} recorded, now sha256 ${sha256Of(agent)}`);
      expect(changed.stdout).toContain("nothing was rebuilt");
    } finally {
      writeFileSync(agent, original);
    }
  }, 600_000);
});
