// The environment of the programs osbuild runs: the same clean one for every step.

/**
 * Where the programs steps run are found: a fixed list, never the caller's PATH (which could
 * put anything first). OSBUILD_PATH replaces it, for a deliberate choice of other tools.
 */
export const TOOL_PATH = process.env.OSBUILD_PATH || "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/**
 * The environment every program osbuild runs starts from: a fixed PATH, HOME and LANG and
 * nothing else of the caller's (proxies, LD_PRELOAD, tool settings). What a program needs
 * beyond it, its step passes by name.
 */
export function toolEnvironment(home = "/nonexistent"): Record<string, string> {
  return { PATH: TOOL_PATH, HOME: home, LANG: "C.UTF-8" };
}
