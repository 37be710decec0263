// osbuild as a user gets it: packed by npm from a fresh clone (pack builds dist/ itself),
// installed from that tarball into an empty project (npm may fetch osbuild's dependencies,
// never osbuild), and used there: init, check, tsc, a type error at its file:line:col,
// every template checked, an extension image and a directory-based initrd built, the
// initrd booted. Also: the tarball holds only what runs, and a git install builds dist/.
// What is tested is the committed HEAD, as CI and a git install see it.

import { existsSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { parseMbr } from "../formats/mbr.js";
import { REPO, readAt, run, sh, tempDir, writeFiles, type RunResult } from "./helpers.js";

const TEMPLATES = ["kata-initrd", "kata-image", "extension", "custom-step"];
const MARKER = "OSBUILD-TEST-AGENT: started as /init (pid 1)";

/** npm without the settings of an outer `npm test` (npm_config_* would change what it does), and quiet. */
const NPM_ENV: NodeJS.ProcessEnv = {
  ...Object.fromEntries(Object.entries(process.env).filter(([name]) => !/^npm_/i.test(name))),
  npm_config_audit: "false",
  npm_config_fund: "false",
  npm_config_update_notifier: "false",
  npm_config_prefer_offline: "true",
};

async function npm(args: string[], cwd: string): Promise<RunResult> {
  const result = await run("npm", args, { cwd, env: NPM_ENV });
  if (result.code !== 0) throw new Error(`npm ${args.join(" ")} failed (${result.code}):\n${result.stdout}\n${result.stderr}`);
  return result;
}

/** The project's own osbuild, as its user runs it (`--no`: never fetch one). */
function npx(args: string[], cwd: string): Promise<RunResult> {
  return run("npx", ["--no", "--", ...args], { cwd, env: NPM_ENV });
}

interface PackedFile {
  path: string;
  mode: number;
}

describe("osbuild as an npm package, in a project of its own", () => {
  let clone: string;
  let files: PackedFile[];
  let project: string;
  let cache: string;

  beforeAll(async () => {
    clone = tempDir("osbuild-clone");
    const head = sh(`git -C ${REPO} rev-parse HEAD`).trim();
    sh(`git clone -q ${REPO} ${clone} && git -C ${clone} checkout -q --detach ${head}`);
    await npm(["ci", "--ignore-scripts"], clone);
    expect(existsSync(join(clone, "dist")), "a fresh clone has no dist/").toBe(false);
    const packDir = tempDir("osbuild-pack");
    const pack = await npm(["pack", "--json", "--pack-destination", packDir], clone);
    const [packed] = JSON.parse(pack.stdout) as Array<{ filename: string; files: PackedFile[] }>;
    files = packed!.files;

    project = tempDir("user-project");
    cache = join(project, ".cache");
    writeFiles(project, { "package.json": `${JSON.stringify({ name: "my-guest", private: true })}\n` });
    await npm(["install", "--save-dev", join(packDir, packed!.filename)], project);
  }, 600_000);

  it("packs dist/ (built by npm pack itself), the command, the templates, the test agent's source, README and LICENSE, and nothing else", () => {
    const paths = files.map((file) => file.path);
    for (const needed of ["package.json", "README.md", "LICENSE", "bin/osbuild.js", "dist/cli.js", "dist/index.js", "dist/index.d.ts", "agent/test-agent.c", ...TEMPLATES.map((name) => `stdlib/templates/${name}/osbuild.config.ts`)]) {
      expect(paths, needed).toContain(needed);
    }
    const shipped = /^(package\.json|README\.md|LICENSE|bin\/osbuild\.js|agent\/test-agent\.c|dist\/(?!bench\/).+\.(js|d\.ts)|stdlib\/templates\/[a-z-]+\/.+)$/;
    expect(paths.filter((path) => !shipped.test(path))).toEqual([]);
    expect(paths.filter((path) => /^(test|bench|\.ci|examples|scripts|engine|formats)\/|\.map$|tsbuildinfo|node_modules/.test(path))).toEqual([]);
    expect(files.find((file) => file.path === "bin/osbuild.js")!.mode & 0o111).not.toBe(0);
    expect(files.find((file) => file.path === "stdlib/templates/extension/extension/bin/hello")!.mode & 0o111).not.toBe(0);
    expect(readFileSync(join(clone, "LICENSE"), "utf8")).toContain("Apache License");
  });

  it("init writes a starter project, and overwrites nothing without --force", async () => {
    const init = await npx(["osbuild", "init"], project);
    expect(init.code, init.stderr).toBe(0);
    expect(init.stdout).toContain("next:\n  npx osbuild run\n  npx osbuild boot initrd --expect OSBUILD-TEST-AGENT\n");
    expect(readFileSync(join(project, "osbuild.config.ts"), "utf8")).toBe(readFileSync(join(clone, "stdlib/templates/kata-initrd/osbuild.config.ts"), "utf8"));
    expect(JSON.parse(readFileSync(join(project, "tsconfig.json"), "utf8").replace(/^\/\/.*$/gm, ""))).toMatchObject({ compilerOptions: { strict: true, types: ["node"] } });
    expect(readFileSync(join(project, ".gitignore"), "utf8").split("\n")).toEqual(expect.arrayContaining(["out/", "build/"]));
    // The package.json npm wrote is the user's: kept, with osbuild as npm recorded it.
    expect(JSON.parse(readFileSync(join(project, "package.json"), "utf8")).devDependencies.osbuild).toMatch(/^file:.*osbuild-0\.1\.0\.tgz$/);
    expect(sh("file -b build/kata-agent", project)).toMatch(/ELF 64-bit.*statically linked/);

    const config = readFileSync(join(project, "osbuild.config.ts"), "utf8");
    writeFileSync(join(project, "osbuild.config.ts"), `// mine\n${config}`);
    const again = await npx(["osbuild", "init"], project);
    expect(again.code).toBe(2);
    expect(again.stderr).toMatch(/already has osbuild\.config\.ts, tsconfig\.json: nothing was written[\s\S]*--force/);
    expect(readFileSync(join(project, "osbuild.config.ts"), "utf8")).toBe(`// mine\n${config}`);
    const forced = await npx(["osbuild", "init", "--force"], project);
    expect(forced.code, forced.stderr).toBe(0);
    expect(readFileSync(join(project, "osbuild.config.ts"), "utf8")).toBe(config);
  });

  it("check and tsc pass on the generated config; a type error is reported at its file:line:col", async () => {
    const check = await npx(["osbuild", "check", "--cache-dir", cache], project);
    expect(check.code, check.stderr).toBe(0);
    expect(check.stdout).toContain("osbuild.config.ts: ok (4 steps, targets: initrd)");
    const tsc = await npx(["tsc", "--noEmit", "-p", "."], project);
    expect(tsc.code, tsc.stdout + tsc.stderr).toBe(0);

    const file = join(project, "osbuild.config.ts");
    const good = readFileSync(file, "utf8");
    const bad = good.replace("mkCpio(rootfs)", 'mkCpio(rootfs, { compression: "lz5" })');
    expect(bad).not.toBe(good);
    const before = bad.slice(0, bad.indexOf('"lz5"')).split("\n");
    writeFileSync(file, bad);
    try {
      const failed = await npx(["osbuild", "check", "--cache-dir", cache], project);
      expect(failed.code).toBe(2);
      expect(failed.stderr).toContain(`osbuild.config.ts:${before.length}:${before.at(-1)!.length - "compression: ".length + 1} - error TS2322: Type '"lz5"' is not assignable`);
      expect(failed.stderr).toContain("the config has 1 type error; nothing was built");
    } finally {
      writeFileSync(file, good);
    }
  });

  it("every template type-checks against the installed package, with osbuild check and with tsc", async () => {
    for (const name of TEMPLATES) {
      const init = await npx(["osbuild", "init", name, "--template", name], project);
      expect(init.code, `${name}: ${init.stderr}`).toBe(0);
      // A project without a package.json gets one naming osbuild as this one's does.
      const manifest = JSON.parse(readFileSync(join(project, name, "package.json"), "utf8"));
      expect(manifest).toMatchObject({ private: true, scripts: { build: "osbuild run", check: "osbuild check" } });
      expect(manifest.devDependencies.osbuild).toMatch(/^file:\/.*osbuild-0\.1\.0\.tgz$/);
      const check = await npx(["osbuild", "check", "--cache-dir", cache], join(project, name));
      expect(check.code, `${name}: ${check.stderr}`).toBe(0);
    }
    // The project's tsconfig.json takes in every .ts below it: one tsc for all the templates.
    const tsc = await npx(["tsc", "--noEmit", "--listFiles", "-p", "."], project);
    expect(tsc.code, tsc.stdout).toBe(0);
    for (const name of TEMPLATES) expect(tsc.stdout).toContain(join(project, name, "osbuild.config.ts"));
  }, 300_000);

  it("the extension template builds an erofs image that veritysetup verifies against its root hash", async () => {
    const dir = join(project, "extension");
    const build = await npx(["osbuild", "run", "--cache-dir", cache], dir);
    expect(build.code, build.stderr).toBe(0);
    const image = join(dir, "out/image");
    const [data, hash] = parseMbr(readAt(image, 0, 512)).partitions;
    const fields = Object.fromEntries(readFileSync(join(dir, "out/root_hash"), "utf8").trim().split(",").map((pair) => pair.split("=") as [string, string]));
    const extract = (name: string, partition: typeof data): void =>
      void sh(`dd if=${image} of=${name} bs=1M iflag=skip_bytes,count_bytes skip=${partition!.startLba * 512} count=${partition!.sizeLba * 512} status=none`, dir);
    extract("data.img", data);
    extract("hash.img", hash);
    sh(`veritysetup verify --no-superblock --salt=${fields.salt} --data-blocks=${fields.data_blocks} data.img hash.img ${fields.root_hash}`, dir);
    sh("fsck.erofs --extract=files data.img", dir);
    expect(sh("files/bin/hello", dir)).toBe("hello from a Kata guest extension\n");
  }, 300_000);

  it("a directory base becomes an initrd that boots, with the agent init built", async () => {
    writeFiles(project, {
      "tree/etc/hostname": "guest\n",
      "boot.config.ts": `import { defineConfig, fetchBase, installAgent, mkCpio } from "osbuild";

export default defineConfig({
  sourceDateEpoch: 1735689600,
  targets: () => ({ initrd: mkCpio(installAgent(fetchBase({ directory: "./tree" }), { binary: "./build/kata-agent", init: "agent" })) }),
});
`,
    });
    sh("mkdir -p tree/dev tree/proc tree/sys tree/sbin", project);
    const build = await npx(["osbuild", "run", "--config", "boot.config.ts", "--cache-dir", cache, "--out", "out-boot"], project);
    expect(build.code, build.stderr).toBe(0);
    const boot = await npx(["osbuild", "boot", "out-boot/initrd", "--cache-dir", cache, "--expect", MARKER, "--timeout", "240"], project);
    expect(boot.code, boot.stdout + boot.stderr).toBe(0);
    expect(boot.stdout).toContain(MARKER);
  }, 600_000);

  it("installs from git, building dist/ through prepare", async () => {
    const gitProject = tempDir("git-project");
    writeFiles(gitProject, { "package.json": `${JSON.stringify({ name: "from-git", private: true })}\n` });
    await npm(["install", "--save-dev", `git+file://${clone}`], gitProject);
    expect(statSync(join(gitProject, "node_modules/osbuild/dist/cli.js")).isFile()).toBe(true);
    const version = await npx(["osbuild", "--version"], gitProject);
    expect(version.stdout).toBe(`osbuild ${JSON.parse(readFileSync(join(clone, "package.json"), "utf8")).version}\n`);
  }, 300_000);
});

