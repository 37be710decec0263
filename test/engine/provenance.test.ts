// Provenance on a small base made here (a tarball with busybox and a dpkg database of its
// own, hostile entries included): what each kind of step records, as `osbuild why` and the
// SBOM show it, and verify-reproducible --provenance failing by name, before a rebuild for
// a changed host input and after one for a step that is not deterministic.

import { createHash } from "node:crypto";
import { chmodSync, copyFileSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import cacache from "cacache";
import { beforeAll, describe, expect, it } from "vitest";
import { AGENT, osbuild, sh, tempDir, writeFiles } from "../helpers.js";
import { sha256Of, spdxValidator } from "../spdx.js";

const STATUS = `Package: foo
Status: install ok installed
Architecture: amd64
Source: foo-src (1.0)
Version: 1.0-1
Description: a packaged file
 with a second line: Package: not-a-package

Package: gone
Status: deinstall ok config-files
Architecture: amd64
Version: 2

Package: ../../etc/passwd
Status: install ok installed
Architecture: amd64
Version: 1
`;

const config = (extra: string): string => `import { writeFileSync } from "node:fs";
import { defineConfig, defineStep, fetchBase, installAgent, mkCpio, overlay, param, run } from "osbuild";

const stamp = defineStep({
  kind: "stamp",
  version: 1,
  inputs: ["rootfs"],
  output: "rootfs",
  async run(options: { text: string }, ctx) {
    const tree = await ctx.tree();
    writeFileSync(tree.path("/etc/stamp"), options.text === "clock" ? String(process.hrtime.bigint()) : options.text);
  },
});

export default defineConfig({
  params: { agent: param.path(${JSON.stringify(AGENT)}), stamp: param.string("fixed") },
  sourceDateEpoch: 1735689600,
  ${extra}
  targets: ({ agent, stamp: text }) => {
    const base = fetchBase({ tarball: "./base.tar", id: "base" });
    const configured = overlay(base, { from: "./overlay", to: "/etc/app" });
    const ran = run(configured, { script: "echo hello > /etc/greeting", network: false });
    const rootfs = installAgent(stamp(ran, { text }), { binary: agent, init: "agent", version: "3.2.1" });
    return { rootfs, initrd: mkCpio(rootfs) };
  },
});
`;

/** A project whose base is a tarball: busybox as /bin/sh (bin → usr/bin), os-release, and a dpkg database. */
function project(extra = ""): string {
  const dir = tempDir("provenance-small");
  const tree = join(dir, "tree");
  writeFiles(tree, {
    "usr/bin/foo": "#!/bin/sh\necho foo\n",
    "etc/os-release": "ID=debian\nVERSION_ID=12\n",
    "etc/hostname": "guest\n",
    "var/lib/dpkg/status": STATUS,
    // dpkg lists /bin/foo, which lives at usr/bin/foo; and paths that are not there or leave the tree
    "var/lib/dpkg/info/foo.list": "/.\n/bin\n/bin/foo\n/usr/share/doc/foo/copyright\n/../../etc/shadow\n",
    "var/lib/dpkg/info/passwd.list": "/etc/hostname\n",
  });
  copyFileSync("/bin/busybox", join(tree, "usr/bin/busybox"));
  chmodSync(join(tree, "usr/bin/foo"), 0o755);
  symlinkSync("busybox", join(tree, "usr/bin/sh"));
  symlinkSync("usr/bin", join(tree, "bin"));
  sh(`tar --owner=0 --group=0 --numeric-owner -cf ${join(dir, "base.tar")} -C ${tree} .`);
  writeFiles(dir, { "osbuild.config.ts": config(extra), "overlay/app.conf": "setting = 1\n", "overlay/sub/more.conf": "more\n" });
  return dir;
}

interface Why {
  resolvedPath: string;
  history: Array<{ change: string; step: { id: string; function: string }; origins: Array<Record<string, unknown>> }>;
  final: Record<string, unknown> | null;
}

describe("provenance of each kind of step", () => {
  let dir: string;
  const why = async (path: string): Promise<Why> => {
    const result = await osbuild(["why", "initrd", path, "--json", "--cache-dir", join(dir, "cache")], { cwd: dir });
    expect(result.code, result.stderr).toBe(0);
    return JSON.parse(result.stdout) as Why;
  };

  beforeAll(async () => {
    dir = project();
    const built = await osbuild(["run", "--json", "--cache-dir", join(dir, "cache")], { cwd: dir });
    if (built.code !== 0) throw new Error(`build failed:\n${built.stdout}\n${built.stderr}`);
  }, 300_000);

  it("names the host archive and the package of a file the base brought, through bin → usr/bin", async () => {
    const foo = await why("/bin/foo");
    expect(foo.resolvedPath).toBe("/usr/bin/foo");
    expect(foo.history).toHaveLength(1);
    expect(foo.history[0]!.step).toMatchObject({ id: "base", function: "fetchBase" });
    expect(foo.history[0]!.origins).toEqual([
      { type: "host-file", option: "tarball", hostPath: "base.tar", via: "archive", sha256: sha256Of(join(dir, "base.tar")) },
      { type: "package", database: "dpkg", name: "foo", version: "1.0-1", architecture: "amd64", source: { name: "foo-src", version: "1.0" }, purl: "pkg:deb/debian/foo@1.0-1?arch=amd64&distro=debian-12" },
    ]);
  });

  it("names an overlay's host file, a run step's command, and the step's own code", async () => {
    const conf = await why("etc/app/sub/more.conf");
    expect(conf.history.map((event) => event.step.id)).toEqual(["overlay"]);
    expect(conf.history[0]!.origins).toEqual([{ type: "host-file", option: "from", hostPath: "overlay/sub/more.conf", via: "directory", sha256: sha256Of(join(dir, "overlay/sub/more.conf")) }]);
    const greeting = await why("/etc/greeting");
    expect(greeting.history.map((event) => [event.change, event.step.id])).toEqual([["added", "run"]]);
    expect(greeting.history[0]!.origins).toEqual([{ type: "command", command: "echo hello > /etc/greeting" }]);
    const stamp = await why("/etc/stamp");
    expect(stamp.history[0]!.origins).toEqual([{ type: "step" }]);
    const init = await why("/sbin/init");
    expect(init.history[0]!.origins).toContainEqual(expect.objectContaining({ type: "component", name: "kata-agent", version: "3.2.1" }));
  });

  it("writes an SBOM that validates, with the packages, the agent and the host files, and nothing of the hostile entries", () => {
    const sbom = JSON.parse(readFileSync(join(dir, "out/initrd.spdx.json"), "utf8")) as { packages: Array<Record<string, unknown>>; files: Array<{ fileName: string; comment: string }> };
    expect(spdxValidator()(sbom)).toBeUndefined();
    const names = sbom.packages.map((pkg) => pkg.name);
    expect(names).toContain("foo");
    expect(names).toContain("kata-agent");
    expect(names).not.toContain("gone"); // only installed packages
    expect(names.some((name) => String(name).includes(".."))).toBe(false);
    expect(sbom.packages.find((pkg) => pkg.name === "foo")).toMatchObject({ versionInfo: "1.0-1", sourceInfo: "built from the source package foo-src 1.0" });
    const files = sbom.files.map((file) => file.fileName);
    expect(files).toEqual(expect.arrayContaining(["./etc/app/app.conf", "./etc/app/sub/more.conf", "./usr/bin/foo", "./etc/hostname", "./sbin/init"]));
    expect(files).not.toContain("./etc/greeting"); // made by a command, not a host file
    expect(sbom.files.find((file) => file.fileName === "./etc/app/app.conf")!.comment).toContain("from host file overlay/app.conf");
  });

  it("keeps each file's SHA1 beside its layer for the next SBOM, which trusts only a well-formed record", async () => {
    const cache = join(dir, "cache");
    type SbomFiles = { files: Array<{ fileName: string; checksums: Array<{ algorithm: string; checksumValue: string }> }> };
    const sha1Of = (sbom: SbomFiles, name: string): string | undefined => sbom.files.find((file) => file.fileName === name)?.checksums.find((sum) => sum.algorithm === "SHA1")?.checksumValue;
    const before = JSON.parse(readFileSync(join(dir, "out/initrd.spdx.json"), "utf8")) as SbomFiles;
    const conf = sha1Of(before, "./etc/app/app.conf");
    expect(conf).toBe(createHash("sha1").update(readFileSync(join(dir, "overlay/app.conf"))).digest("hex"));
    // The overlay's layer has a record, holding that SHA1 among others.
    const records = Object.keys(await cacache.ls(cache)).filter((key) => key.startsWith("osbuild:file-sha1:"));
    const holding: string[] = [];
    for (const key of records) {
      const { data } = await cacache.get(cache, key);
      if (Object.values((JSON.parse(data.toString("utf8")) as { sha1: Record<string, string> }).sha1).includes(conf!)) holding.push(key);
    }
    expect(holding).toHaveLength(1);
    const rewrite = async (record: string): Promise<SbomFiles> => {
      await cacache.put(cache, holding[0]!, record, { algorithms: ["sha256"] }); // as the store writes
      rmSync(join(cache, "memo", "index.json"), { force: true }); // the lookup memo would still name the old record
      rmSync(join(dir, "out/initrd.spdx.json"));
      const rebuilt = await osbuild(["run", "initrd", "--cache-dir", cache], { cwd: dir });
      expect(rebuilt.code, rebuilt.stderr).toBe(0);
      return JSON.parse(readFileSync(join(dir, "out/initrd.spdx.json"), "utf8")) as SbomFiles;
    };
    // A well-formed record is what the SBOM says: the files are not read again.
    const { data } = await cacache.get(cache, holding[0]!);
    const kept = JSON.parse(data.toString("utf8")) as { version: number; sha1: Record<string, string> };
    const offset = Object.keys(kept.sha1).find((key) => kept.sha1[key] === conf)!;
    expect(sha1Of(await rewrite(JSON.stringify({ ...kept, sha1: { ...kept.sha1, [offset]: "0".repeat(40) } })), "./etc/app/app.conf")).toBe("0".repeat(40));
    // One that is not (a digest that is no SHA1, a name that is no offset) counts as nothing kept.
    const again = await rewrite(JSON.stringify({ version: 1, sha1: { [offset]: "not hex; rm -rf /", "../x": conf } }));
    expect(again).toEqual(before);
  });

  it("fails verify-reproducible --provenance at once, naming a host directory that changed", async () => {
    writeFileSync(join(dir, "overlay/app.conf"), "setting = 2\n");
    const result = await osbuild(["verify-reproducible", "--provenance", join(dir, "out/initrd.intoto.json")], { cwd: dir });
    expect(result.code).toBe(1);
    expect(result.stdout).toMatch(/^ {2}host:overlay\.from \(file:\/\/\S+\/overlay\): osbuildDirSha256 [0-9a-f]{64} recorded, now osbuildDirSha256 [0-9a-f]{64}$/m);
    expect(result.stdout).toContain("not reproducible: 1 recorded input(s) changed; nothing was rebuilt");
  });
});

describe("verify-reproducible --provenance on a step that is not deterministic", () => {
  it("rebuilds, says the subject differs and where, and honours the config's sbom: false", async () => {
    const dir = project("sbom: false,");
    const built = await osbuild(["run", "--json", "--set", "stamp=clock", "--cache-dir", join(dir, "cache")], { cwd: dir });
    expect(built.code, built.stderr).toBe(0);
    expect(built.events.filter((event) => event.type === "attestation").map((event) => event.kind)).toEqual(["provenance", "provenance"]);
    const statement = JSON.parse(readFileSync(join(dir, "out/initrd.intoto.json"), "utf8")) as { predicate: { buildDefinition: { externalParameters: { parameters: Record<string, unknown> } } } };
    expect(statement.predicate.buildDefinition.externalParameters.parameters.stamp).toBe("clock");
    const result = await osbuild(["verify-reproducible", "--provenance", join(dir, "out/initrd.intoto.json")], { cwd: dir });
    expect(result.code).toBe(1);
    expect(result.stdout).toMatch(/^initrd: DIFFERS: the provenance records sha256 [0-9a-f]{64}, the rebuild made [0-9a-f]{64}$/m);
    expect(result.stdout).toMatch(/first difference from \S+\/out\/initrd: cpio entry \d+ 'etc\/stamp'/);
  }, 300_000);
});
