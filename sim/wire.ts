/**
 * Messages on the simulated network. With real signatures a message is sealed
 * with its sender's identity and opened (verified) with crypto/; with fast
 * ones the stamped body travels as is, with a typical sealed size, its times
 * checked as crypto/ checks them, and only a forger's tampering marked. A
 * wire is opened once and the result shared by every receiver. A replayer
 * sends a wire again as its own.
 */
import {
  BadSignatureError,
  checkTime,
  type Identity,
  identityFromSeed,
  openAnyEnvelope,
  sealEnvelope,
} from "../crypto/index.ts";
import {
  hexOf,
  type MessageDomainName,
  messageDomains,
  messageRegistry,
  type Opened,
  type StampedMessage,
} from "../jobs/index.ts";

/** Envelope sizes in fast-signature mode (no envelope is made): typical sealed sizes measured in real mode. */
export const fastEnvelopeBytes: Readonly<Record<string, number>> = {
  jobAnnouncement: 700,
  offer: 390,
  bid: 240,
  award: 600,
  reject: 300,
  leaseRenew: 260,
  logChunk: 400,
  result: 400,
  resultAck: 240,
  verdict: 420,
  cancel: 300,
};

/** A message on the wire: the stamped body in both modes, and the sealed bytes in real mode. */
export interface Wire {
  /** The node that put it on the network. */
  readonly from: number;
  /** The node whose key signed it (another than `from` for a replay). */
  readonly signer: number;
  readonly domain: MessageDomainName;
  readonly body: Record<string, unknown>;
  readonly bytes: Uint8Array | null;
  readonly size: number;
  /** Set by forgers: a broken signature. In real mode the bytes carry the damage. */
  readonly tampered: boolean;
  /** Sent by a forger (tampered or not): must never reach a machine. Known to the observer only. */
  readonly forged?: boolean;
  /** The wire a replayer sent again (set on the copy): a node that took it must not take it twice. */
  readonly original?: Wire;
  /** Receivers whose machine took this wire, kept by the observer while replayers act. */
  takenBy?: Set<object>;
  /** Opened once, then shared by every receiver (opening is a pure function of the bytes and the time). */
  opened?: Opened;
}

/** What sealing and opening need of a node: the identity it signs with (real signatures only) and its public key. */
export interface WireSigner {
  readonly identity: Identity | null;
  readonly signer: Uint8Array;
}

/** Seals, opens and replays the wires of one world's nodes. */
export class Wires {
  private readonly seed: number;
  private readonly real: boolean;
  /** The world's nodes, by index (the list grows as nodes are added). */
  private readonly signers: readonly WireSigner[];

  constructor(seed: number, real: boolean, signers: readonly WireSigner[]) {
    this.seed = seed;
    this.real = real;
    this.signers = signers;
  }

  /** Node `index`'s key (hex) and, with real signatures, its identity: drawn from the seed, not from the generator. */
  keysOf(index: number): { key: string; identity: Identity | null } {
    if (!this.real) return { key: (index + 1).toString(16).padStart(64, "0"), identity: null };
    const seed = new Uint8Array(32);
    const view = new DataView(seed.buffer);
    view.setUint32(0, this.seed);
    view.setUint32(4, index);
    view.setUint32(8, 0x51a1);
    const identity = identityFromSeed(seed);
    return { key: hexOf(identity.publicKey), identity };
  }

  /** Seals a message as node `from` (in fast mode, only its size is made up); a forger's is tampered. */
  seal(from: number, message: StampedMessage, tampered = false): Wire {
    const identity = this.real ? (this.signers[from] as WireSigner).identity : null;
    const domain = message.domain as MessageDomainName;
    if (identity === null)
      return {
        from,
        signer: from,
        domain,
        body: message.body,
        bytes: null,
        size: fastEnvelopeBytes[domain] ?? 256,
        tampered,
      };
    const bytes = sealEnvelope(messageDomains[domain] as never, message.body as never, identity);
    if (tampered) bytes[bytes.length - 1] = (bytes[bytes.length - 1] as number) ^ 0x01;
    return { from, signer: from, domain, body: message.body, bytes, size: bytes.length, tampered };
  }

  /** The same signed message once more, sent by `from`. */
  replay(from: number, original: Wire): Wire {
    return { ...original, from, opened: undefined, original, takenBy: undefined };
  }

  /** The key that signed the wire, as a receiver opening it at `nowMs` (absolute) finds it; null if unreadable. */
  signerOf(wire: Wire, nowMs: number): string | null {
    const opened = this.open(wire, nowMs);
    return opened.kind === "message" ? hexOf(opened.signer) : null;
  }

  /**
   * What opening the wire gives a receiver: in fast mode the body as sent, its times checked as crypto/ checks them,
   * unless a forger broke its signature.
   */
  open(wire: Wire, nowMs: number): Opened {
    if (wire.opened !== undefined) return wire.opened;
    let opened: Opened;
    if (wire.bytes === null) {
      opened = wire.tampered
        ? { kind: "unreadable", error: new BadSignatureError("envelope") }
        : {
            kind: "message",
            tag: messageDomains[wire.domain].tag,
            signer: (this.signers[wire.signer] as WireSigner).signer,
            body: wire.body as never,
          };
      // crypto/ checks the signature before the time: a broken one is forged whatever its time says.
      if (!wire.tampered)
        try {
          checkTime(wire.body as never, nowMs);
        } catch (error) {
          opened = { kind: "unreadable", error };
        }
    } else {
      try {
        const verified = openAnyEnvelope(messageRegistry, wire.bytes, nowMs);
        opened = { kind: "message", tag: verified.domain, signer: verified.signer, body: verified.body as never };
      } catch (error) {
        opened = { kind: "unreadable", error };
      }
    }
    wire.opened = opened;
    return opened;
  }
}
