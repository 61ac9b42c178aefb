/**
 * node/control: the control API of a running node, JSON over HTTP on
 * 127.0.0.1 (control.ts), the NodeApi both its server and its client
 * speak (api.ts), and the browser's way in to the dashboard on the same port
 * (dashboard.ts: sessions, Host and Origin checks, the page's files).
 */
export type {
  BusySlot,
  FetchStatus,
  JobDetail,
  JobSummary,
  LogLine,
  NodeApi,
  NodeStatus,
  ReachabilityStatus,
  ReportDetail,
  ReportDraft,
  ReportSummary,
  RulesBody,
  RunSummary,
} from "./api.ts";
export {
  type ControlClient,
  ControlRequestError,
  connectControl,
  controlTokenBytes,
  eventsPath,
  loginCodesPath,
  loginPath,
  maxControlBodyBytes,
  metricsContentType,
  metricsPath,
  NoNodeRunningError,
  portFileName,
  startControlServer,
  tokenFileName,
} from "./control.ts";
export {
  contentSecurityPolicy,
  loginCodeLifetimeMs,
  Sessions,
  sessionCookieName,
  sessionLifetimeMs,
} from "./dashboard.ts";
