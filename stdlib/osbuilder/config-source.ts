// A plan printed as the osbuild.config.ts that builds the same graph: the same steps with
// the same options (so the same cache keys), the targets under osbuilder's file names.

import type { Plan, PlannedTarget } from "./plan.js";

/** `rootfsTargets`: the rootfs directories osbuilder writes, as rootfs targets (OCI layouts). */
export function configSource(plan: Plan, command: string, rootfsTargets: readonly PlannedTarget[] = []): string {
  const steps = [...new Set(plan.calls.map((call) => call.step))].sort();
  const lines = [
    `// The osbuild config equivalent to: ${command}`,
    "// Build it with `osbuild run` (targets go to ./out/<name>, under osbuilder's file names);",
    "// every step is cached, and shared with `osbuild osbuilder` builds of the same variables.",
    "",
    `import { defineConfig, ${steps.join(", ")} } from "osbuild";`,
    "",
    "export default defineConfig({",
    `  sourceDateEpoch: ${plan.sourceDateEpoch},`,
    ...(plan.arch ? [`  arch: ${JSON.stringify(plan.arch)},`] : []),
    "  targets: () => {",
  ];
  for (const call of plan.calls) {
    if (call.comment) lines.push(`    // ${call.comment}`);
    const args = [...(call.input ? [call.input] : []), ...(Object.keys(call.options).length > 0 || !call.input ? [literal(call.options, 4)] : [])];
    lines.push(`    const ${call.name} = ${call.step}(${args.join(", ")});`);
  }
  lines.push("    return {");
  for (const target of [...rootfsTargets, ...plan.targets]) lines.push(`      ${key(target.name)}: ${target.from}${target.output ? `.${target.output}` : ""},`);
  lines.push("    };", "  },", "});", "");
  return lines.join("\n");
}

/** A value as TypeScript source: objects with bare keys where they are identifiers. */
function literal(value: unknown, indent: number): string {
  if (Array.isArray(value)) return `[${value.map((item) => literal(item, indent)).join(", ")}]`;
  if (typeof value === "object" && value !== null) {
    const entries = Object.entries(value);
    if (entries.length === 0) return "{}";
    return `{ ${entries.map(([name, item]) => `${key(name)}: ${literal(item, indent)}`).join(", ")} }`;
  }
  return JSON.stringify(value);
}

function key(name: string): string {
  return /^[A-Za-z_$][A-Za-z0-9_$]*$/.test(name) ? name : JSON.stringify(name);
}
