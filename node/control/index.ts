/**
 * node/control: the control API of a running node, JSON over HTTP on
 * 127.0.0.1 (control.ts), and the NodeApi both its server and its client
 * speak (api.ts).
 */
export type { FetchStatus, JobDetail, JobSummary, LogLine, NodeApi, NodeStatus } from "./api.ts";
export {
  type ControlClient,
  ControlRequestError,
  connectControl,
  controlTokenBytes,
  maxControlBodyBytes,
  NoNodeRunningError,
  portFileName,
  startControlServer,
  tokenFileName,
} from "./control.ts";
