// Type-checks a config with the TypeScript compiler API, as `tsc --strict --noEmit` would,
// with "osbuild" mapped to this package's declarations. A clean result is remembered by the
// content of every file the program read, so an unchanged config is never checked twice.

import { createHash } from "node:crypto";
import { readFileSync, readdirSync, statSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join, relative } from "node:path";
import { readMemoFile, writeMemoFile } from "../memo.js";
import type { CompileSettings } from "./compiled.js";
import { runCompilerTask } from "./compiler-process.js";

export interface ConfigDiagnostic {
  file?: string;
  line?: number;
  column?: number;
  code: number;
  message: string;
}

export interface TypecheckOptions {
  /** The package's declaration entry (dist/index.d.ts). */
  osbuildTypes: string;
  /** Directory holding @types packages (for "node"). */
  typeRoots: string[];
  memoFile: string;
  /** Type-check even when the memo says these bytes were checked before (osbuild check). */
  always?: boolean;
  /** Compile a clean config for loading too, while the compiler is loaded (compiled.ts). */
  compile?: CompileSettings;
}

interface Memo {
  [configFile: string]: { osbuild: string; files: Record<string, string> };
}

export interface TypecheckResult {
  diagnostics: ConfigDiagnostic[];
  /** When clean: every file of the config the program read (not the libraries'), path → sha256 hex. */
  files: Record<string, string>;
}

export async function typecheckConfig(configFile: string, options: TypecheckOptions): Promise<TypecheckResult> {
  const memo = readMemoFile<Memo>(options.memoFile, {});
  const osbuildStamp = osbuildIdentity(dirname(options.osbuildTypes), options.memoFile);
  const known = memo[configFile];
  if (!options.always && known && known.osbuild === osbuildStamp && Object.entries(known.files).every(([file, hash]) => hashOf(file) === hash)) return { diagnostics: [], files: known.files };
  const result = await runCompilerTask({ configFile, typecheck: options, compile: options.compile });
  if (result.diagnostics.length === 0) {
    memo[configFile] = { osbuild: osbuildStamp, files: result.files };
    writeMemoFile(options.memoFile, memo);
  }
  return result;
}

/** The compiler's part of typecheckConfig (in a process of its own: compiler-process.ts). */
export function typecheckWithCompiler(configFile: string, options: TypecheckOptions): TypecheckResult {
  // require, not import: an ESM import of this 9 MB CommonJS file scans it for exports first.
  const ts = createRequire(import.meta.url)("typescript") as typeof import("typescript");
  const compilerOptions: import("typescript").CompilerOptions = {
    strict: true,
    noEmit: true,
    target: ts.ScriptTarget.ES2022,
    module: ts.ModuleKind.ESNext,
    moduleResolution: ts.ModuleResolutionKind.Bundler,
    allowImportingTsExtensions: true,
    resolveJsonModule: true,
    esModuleInterop: true,
    skipLibCheck: true,
    lib: ["lib.es2023.d.ts"],
    types: [],
    typeRoots: options.typeRoots,
    paths: { osbuild: [options.osbuildTypes] },
  };
  // Node's own types are most of the work (~100 files): load them only for configs that use
  // Node's APIs, decided from the config's own files.
  let program = ts.createProgram([configFile], compilerOptions);
  const userFiles = program.getSourceFiles().filter((source) => !source.isDeclarationFile);
  if (userFiles.some((source) => USES_NODE.test(source.text))) {
    compilerOptions.types = ["node"];
    program = ts.createProgram([configFile], compilerOptions);
  }
  const diagnostics = ts.getPreEmitDiagnostics(program).map((diagnostic): ConfigDiagnostic => {
    const message = ts.flattenDiagnosticMessageText(diagnostic.messageText, "\n");
    if (!diagnostic.file || diagnostic.start === undefined) return { code: diagnostic.code, message };
    const { line, character } = diagnostic.file.getLineAndCharacterOfPosition(diagnostic.start);
    return { file: diagnostic.file.fileName, line: line + 1, column: character + 1, code: diagnostic.code, message };
  });
  if (diagnostics.length === 0) {
    const libDir = dirname(ts.getDefaultLibFilePath(compilerOptions));
    const osbuildDir = dirname(options.osbuildTypes);
    const files: Record<string, string> = {};
    for (const source of program.getSourceFiles()) {
      const file = source.fileName;
      if (file.startsWith(libDir) || file.startsWith(osbuildDir) || options.typeRoots.some((root) => file.startsWith(root))) continue;
      files[file] = hashOf(file);
    }
    return { diagnostics, files };
  }
  return { diagnostics, files: {} };
}

/** Signs that a config uses Node's APIs (and so needs @types/node). */
const USES_NODE = /\bfrom\s+["'](?:node:|(?:fs|path|os|child_process|crypto|url|stream|util|zlib|events)["'/])|\b(?:process|Buffer|__dirname|__filename|require|NodeJS|setImmediate)\b/;

export function formatDiagnostic(diagnostic: ConfigDiagnostic, cwd = process.cwd()): string {
  const where = diagnostic.file ? `${relativeIfInside(diagnostic.file, cwd)}:${diagnostic.line}:${diagnostic.column} - ` : "";
  return `${where}error TS${diagnostic.code}: ${diagnostic.message}`;
}

function relativeIfInside(file: string, cwd: string): string {
  const rel = relative(cwd, file);
  return rel.startsWith("..") ? file : rel;
}

function hashOf(file: string): string {
  try {
    return createHash("sha256").update(readFileSync(file)).digest("hex");
  } catch {
    return "missing";
  }
}

/**
 * What osbuild's side of a type-check depends on: the content of every declaration file of
 * the package (and where it is). Hashed once per change of those files: the hash is kept
 * with the files' sizes and times, and a stat of each (about 120) tells whether it still holds.
 */
function osbuildIdentity(typesDir: string, memoFile: string): string {
  const files = readdirSync(typesDir, { recursive: true, encoding: "utf8" })
    .filter((name) => name.endsWith(".d.ts"))
    .sort();
  const stats = files.map((name) => {
    const info = statSync(join(typesDir, name));
    return `${name}:${info.size}:${info.mtimeMs}`;
  });
  const statKey = createHash("sha256").update(`${typesDir}\0${stats.join("\0")}`).digest("hex");
  const identityFile = join(dirname(memoFile), "osbuild-types.json");
  const known = readMemoFile<{ statKey?: string; identity?: string }>(identityFile, {});
  if (known.statKey === statKey && known.identity) return known.identity;
  const hash = createHash("sha256").update(typesDir);
  for (const name of files) hash.update(`\0${name}\0`).update(readFileSync(join(typesDir, name)));
  const identity = hash.digest("hex");
  writeMemoFile(identityFile, { statKey, identity });
  return identity;
}
