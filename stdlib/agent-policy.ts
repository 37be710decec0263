// The agent policy osbuilder installs when AGENT_POLICY=yes names no file: every request of
// the kata-agent's API allowed. osbuilder takes it from a Kata checkout
// (src/kata-opa/allow-all.rego); osbuild writes its own, from the API's request names.

/** The file name osbuilder gives the default policy (default-policy.rego links to it). */
export const ALLOW_ALL_POLICY_NAME = "allow-all.rego";

/** The kata-agent's ttRPC requests (Kata 4.1), each a rule of the policy. */
const AGENT_REQUESTS = [
  "AddARPNeighborsRequest",
  "AddSwapRequest",
  "CloseStdinRequest",
  "CopyFileRequest",
  "CreateContainerRequest",
  "CreateSandboxRequest",
  "DestroySandboxRequest",
  "ExecProcessRequest",
  "GetDiagnosticDataRequest",
  "GetMetricsRequest",
  "GetOOMEventRequest",
  "GuestDetailsRequest",
  "ListInterfacesRequest",
  "ListRoutesRequest",
  "MemAgentCompactConfig",
  "MemAgentMemcgConfig",
  "MemHotplugByProbeRequest",
  "OnlineCPUMemRequest",
  "PauseContainerRequest",
  "PullImageRequest",
  "ReadStreamRequest",
  "RemoveContainerRequest",
  "RemoveStaleVirtiofsShareMountsRequest",
  "ReseedRandomDevRequest",
  "ResumeContainerRequest",
  "SetGuestDateTimeRequest",
  "SetPolicyRequest",
  "SignalProcessRequest",
  "StartContainerRequest",
  "StartTracingRequest",
  "StatsContainerRequest",
  "StopTracingRequest",
  "TtyWinResizeRequest",
  "UpdateContainerRequest",
  "UpdateEphemeralMountsRequest",
  "UpdateInterfaceRequest",
  "UpdateRoutesRequest",
  "WaitProcessRequest",
  "WriteStreamRequest",
] as const;

/** A Rego policy that allows every agent request (package agent_policy, as the agent loads it). */
export function allowAllPolicy(): string {
  const rules = AGENT_REQUESTS.map((request) => `default ${request} := true`);
  return ["# Written by osbuild: every kata-agent request is allowed.", "", "package agent_policy", "", ...rules, ""].join("\n");
}
