/** The node's own errors: one class per failure, each naming what was expected. */
import { CimeshError } from "../../crypto/index.ts";

export class NodeStartError extends CimeshError {
  constructor(message: string) {
    super("ERR_NODE_START", message);
  }
}

/** A control request the node refuses: the HTTP status to answer with, and why. */
export class NodeRequestError extends CimeshError {
  readonly status: number;
  constructor(status: number, message: string) {
    super("ERR_NODE_REQUEST", message);
    this.status = status;
  }
}
