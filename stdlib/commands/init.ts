// `osbuild init [DIR] [--template NAME] [--force]`: a starter project in DIR. The template's
// osbuild.config.ts (and the files it names), a tsconfig.json that gives editors osbuild's
// types, a package.json with osbuild as a devDependency (only when there is none), out/ and
// build/ in .gitignore, and, for templates that install an agent, osbuild's test agent
// built into build/kata-agent. Nothing is overwritten without --force.

import { spawnSync } from "node:child_process";
import { appendFileSync, chmodSync, copyFileSync, existsSync, mkdirSync, readFileSync, readdirSync, statSync, writeFileSync } from "node:fs";
import { basename, dirname, isAbsolute, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { ConfigError, type CommandContext, type CommandOptionValues, type CommandSpec } from "../../engine/index.js";
import { DEFAULT_TEMPLATE, TEMPLATES, type Template } from "../templates/index.js";

/** The package's root: this file is dist/stdlib/commands/init.js. */
const PACKAGE_ROOT = fileURLToPath(new URL("../../../", import.meta.url));
const AGENT_PATH = "build/kata-agent";
const IGNORED = ["out/", "build/"];

/** The settings `osbuild check` type-checks a config with, so that editors and osbuild agree. */
const TSCONFIG = `// Gives editors osbuild's types for osbuild.config.ts, with the settings \`osbuild check\`
// uses (\`npx tsc\` checks the same way).
{
  "compilerOptions": {
    "target": "ES2022",
    "module": "ESNext",
    "moduleResolution": "Bundler",
    "lib": ["ES2023"],
    "types": ["node"],
    "strict": true,
    "noEmit": true,
    "allowImportingTsExtensions": true,
    "resolveJsonModule": true,
    "esModuleInterop": true,
    "skipLibCheck": true
  },
  "include": ["**/*.ts"],
  "exclude": ["node_modules", "out", "build"]
}
`;

/** What `osbuild init` does; its name and options are in ./index.ts. */
export const init: Pick<CommandSpec, "run"> = {
  async run(args: readonly string[], options: CommandOptionValues, ctx: CommandContext): Promise<number> {
    if (args.length > 1) throw new ConfigError(`init takes one directory, got ${args.length}: ${args.join(" ")}`);
    const template = findTemplate((options.template as string | undefined) ?? DEFAULT_TEMPLATE);
    const force = options.force === true;
    const project = resolve(args[0] ?? ".");
    if (existsSync(project) && !statSync(project).isDirectory()) throw new ConfigError(`${project} exists and is not a directory`);

    // Everything is decided before anything is written: a refusal leaves DIR as it was.
    const templateDir = join(PACKAGE_ROOT, "stdlib", "templates", template.name);
    const files = new Map<string, { from: string } | { text: string }>();
    for (const path of listFiles(templateDir)) files.set(path, { from: join(templateDir, path) });
    files.set("tsconfig.json", { text: TSCONFIG });
    const hasPackageJson = existsSync(join(project, "package.json"));
    if (!hasPackageJson) files.set("package.json", { text: packageJson(project) });
    const existing = [...files.keys()].filter((path) => existsSync(join(project, path)));
    if (existing.length > 0 && !force) {
      throw new ConfigError(`${display(project)} already has ${existing.join(", ")}: nothing was written`, undefined, "pass --force to overwrite them, or name another directory: osbuild init DIR");
    }

    mkdirSync(project, { recursive: true });
    for (const [path, source] of files) {
      const target = join(project, path);
      mkdirSync(dirname(target), { recursive: true });
      if ("text" in source) writeFileSync(target, source.text);
      else {
        copyFileSync(source.from, target);
        chmodSync(target, statSync(source.from).mode & 0o777);
      }
    }
    const ignored = addToGitignore(project);
    const written = [...files.keys(), ...(ignored.length > 0 ? [".gitignore"] : [])];

    say(`osbuild init: ${template.summary}, in ${display(project)}`);
    say(`  wrote ${written.join(", ")}`);
    if (hasPackageJson) say(`  kept package.json as it is (scripts to add: "build": "osbuild run", "check": "osbuild check")`);
    const agentReady = template.agent ? buildTestAgent(project, force, ctx) : true;

    // The next two commands: install osbuild where it is not yet, then build.
    const cd = project === process.cwd() ? "" : `cd ${shellWord(relative(process.cwd(), project) || ".")} && `;
    const installed = osbuildInstalledFor(project);
    const next = installed
      ? [`${cd}npx osbuild run`, template.next]
      : [`${cd}npm install${hasPackageJson ? ` --save-dev ${shellWord(dependencySpec())}` : ""}`, "npx osbuild run"];
    say(`next:\n${next.map((command) => `  ${command}`).join("\n")}`);
    return agentReady ? 0 : 1;
  },
};

function findTemplate(name: string): Template {
  const template = TEMPLATES.find((candidate) => candidate.name === name);
  if (!template) throw new ConfigError(`--template ${name}: no such template`, undefined, `templates: ${TEMPLATES.map((item) => item.name).join(", ")}`);
  return template;
}

/** Files under `dir`, relative and sorted. */
function listFiles(dir: string): string[] {
  if (!existsSync(dir)) throw new ConfigError(`the template folder ${dir} is missing from this osbuild package`, undefined, "reinstall osbuild");
  return readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((entry) => entry.isFile())
    .map((entry) => relative(dir, join(entry.parentPath, entry.name)))
    .sort();
}

function packageJson(project: string): string {
  const name = basename(project).toLowerCase().replace(/[^a-z0-9._-]+/g, "-").replace(/^[._-]+/, "") || "kata-guest";
  const manifest = {
    name,
    version: "0.1.0",
    private: true,
    type: "module",
    scripts: { build: "osbuild run", check: "osbuild check" },
    devDependencies: { osbuild: dependencySpec() },
  };
  return `${JSON.stringify(manifest, null, 2)}\n`;
}

/**
 * How a project's package.json names osbuild: the way this copy was installed (a packed
 * tarball or a git URL, as npm recorded it), a checkout by its path, else the registry's
 * version range.
 */
function dependencySpec(): string {
  const version = (JSON.parse(readFileSync(join(PACKAGE_ROOT, "package.json"), "utf8")) as { version: string }).version;
  const root = PACKAGE_ROOT.replace(/\/+$/, "");
  const nodeModules = dirname(root);
  if (basename(nodeModules) !== "node_modules") return `file:${root}`;
  try {
    const lock = JSON.parse(readFileSync(join(nodeModules, ".package-lock.json"), "utf8")) as { packages?: Record<string, { resolved?: string }> };
    const resolved = lock.packages?.[`node_modules/${basename(root)}`]?.resolved;
    if (resolved?.startsWith("file:")) {
      const path = resolved.slice("file:".length);
      return `file:${isAbsolute(path) ? path : resolve(dirname(nodeModules), path)}`;
    }
    if (resolved && /^(git\+|git:|github:)/.test(resolved)) return resolved;
  } catch {
    /* no lockfile: installed some other way */
  }
  return `^${version}`;
}

/** Whether `import "osbuild"` finds a copy from the project (its own node_modules or a parent's). */
function osbuildInstalledFor(project: string): boolean {
  for (let dir = project; ; dir = dirname(dir)) {
    if (existsSync(join(dir, "node_modules", "osbuild", "package.json"))) return true;
    if (dirname(dir) === dir) return false;
  }
}

/** Adds the lines .gitignore lacks; returns them. */
function addToGitignore(project: string): string[] {
  const file = join(project, ".gitignore");
  const present = existsSync(file) ? readFileSync(file, "utf8") : "";
  const lines = new Set(present.split("\n").map((line) => line.trim()));
  const missing = IGNORED.filter((entry) => !lines.has(entry) && !lines.has(entry.replace(/\/$/, "")) && !lines.has(`/${entry}`));
  if (missing.length > 0) appendFileSync(file, `${present === "" || present.endsWith("\n") ? "" : "\n"}${missing.join("\n")}\n`);
  return missing;
}

/**
 * osbuild's stand-in for kata-agent (agent/test-agent.c: it prints OSBUILD-TEST-AGENT and
 * powers the guest off), so that the new project builds and boots before a real agent is
 * at hand. Returns whether build/kata-agent is there.
 */
function buildTestAgent(project: string, force: boolean, ctx: CommandContext): boolean {
  const agent = join(project, AGENT_PATH);
  if (existsSync(agent) && !force) {
    say(`  kept ${AGENT_PATH} as it is`);
    return true;
  }
  const source = join(PACKAGE_ROOT, "agent", "test-agent.c");
  mkdirSync(dirname(agent), { recursive: true });
  const args = ["-static", "-O2", "-o", agent, source];
  const gcc = spawnSync("gcc", args, { encoding: "utf8" });
  if (gcc.status === 0) {
    say(`  built osbuild's test agent into ${AGENT_PATH}: a stand-in for kata-agent that prints OSBUILD-TEST-AGENT (--set agent=PATH installs a real one)`);
    return true;
  }
  const why = (gcc.error as NodeJS.ErrnoException | undefined)?.code === "ENOENT" ? "gcc is not installed" : (gcc.stderr || gcc.error?.message || "").trim();
  ctx.log(`osbuild init: could not build osbuild's test agent into ${AGENT_PATH}: ${why}`);
  ctx.log(`  hint: apt-get install gcc libc6-dev, then in ${display(project)}: gcc ${args.map((arg) => shellWord(arg === agent ? AGENT_PATH : arg)).join(" ")}`);
  ctx.log("        or give the config a real kata-agent: osbuild run --set agent=PATH");
  return false;
}

/** The command's own output: what it wrote and what to run next. */
function say(line: string): void {
  process.stdout.write(`${line}\n`);
}

function display(path: string): string {
  const rel = relative(process.cwd(), path);
  return rel === "" ? "." : rel.startsWith("..") ? path : `./${rel}`;
}

function shellWord(word: string): string {
  return /^[A-Za-z0-9_./:@+=-]+$/.test(word) ? word : `'${word.replace(/'/g, "'\\''")}'`;
}
