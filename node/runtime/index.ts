/** The running node: startNode and what it answers with. */
export { NodeRequestError, NodeStartError } from "./errors.ts";
export {
  defaultInputsDeadline,
  type InputsDeadline,
  InputsDeadlineError,
  inputsDeadlineMs,
  runCarrier,
} from "./inputs.ts";
export { corruptOutputsDigest, type RunningNode, type StartOptions, startNode } from "./node.ts";
export { createNodePorts, type NodePorts, openInbound } from "./ports.ts";
