/**
 * node/control: the control API of a running node, JSON over HTTP on
 * 127.0.0.1 (control.ts), and the NodeApi both its server and its client
 * speak (api.ts).
 */
export type {
  BusySlot,
  FetchStatus,
  JobDetail,
  JobSummary,
  LogLine,
  NodeApi,
  NodeStatus,
  RunSummary,
} from "./api.ts";
export {
  type ControlClient,
  ControlRequestError,
  connectControl,
  controlTokenBytes,
  maxControlBodyBytes,
  metricsContentType,
  metricsPath,
  NoNodeRunningError,
  portFileName,
  startControlServer,
  tokenFileName,
} from "./control.ts";
