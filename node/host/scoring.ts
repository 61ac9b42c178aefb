/**
 * gossipsub's peer score as cimesh sets it.
 *
 * P4 (invalid deliveries): each project topic weighs a rejected message
 * −100 × count², so a forger is below every threshold after one forgery.
 *
 * P5 (application-specific): minus the peer's penalty points
 * (node/host/penalties.ts), weight 1: floods, forgeries and useless messages
 * cost the sender, and are remembered across its reconnections.
 *
 * P6 (IP colocation): gossipsub counts, for each IP, the peers it knows on
 * it: `peerIPs` holds the connected peers AND the disconnected peers whose
 * stats it retains. PeerScore.removePeer retains every peer whose score is
 * at or below 0, which is every fresh peer that did nothing, for
 * `retainScore` (gossipsub's default: one hour), IPs included. Any peer on an
 * IP with more than IPColocationFactorThreshold (10) known peers scores
 * (n − 10)² × IPColocationFactorWeight (−5). So an attacker that opens and
 * closes 45 short-lived peers from the IP of two honest workers gets 17 known
 * there for an hour, and both workers score (17 − 10)² × −5 = −245, below the
 * publish (−50) and graylist (−80) thresholds: masters stop sending them
 * announcements and drop what they send.
 *
 * The tuning: retainScore = 0. A peer that leaves is dropped from the IP
 * count at gossipsub's next decay (every decayInterval, 1 s), so P6 counts
 * the peers connected from an IP (and those gone within the last second).
 * Threshold and weight stay gossipsub's: 16 Sybils connected at once from one
 * IP still put every peer there at −125, graylisted, for as long as they stay
 * connected; a churn of short-lived ones costs the neighbours nothing once it
 * stops, and while it runs only as much as the peers it keeps connected.
 * What retention was for (a peer cannot reset a bad score by reconnecting) is
 * not lost: this gossipsub starts a reconnecting peer's stats afresh anyway
 * (PeerScore.addPeer), and the misbehaviour worth remembering is in P5, kept
 * by peer id whether the peer is connected or not.
 */
import type { PeerScoreParams, TopicScoreParams } from "@libp2p/gossipsub/score";
import { createTopicScoreParams } from "@libp2p/gossipsub/score";

/** Peers known on one IP before P6 counts (gossipsub's default). */
export const ipColocationThreshold = 10;
/** P6's weight per surplus peer squared (gossipsub's default); tests on 127.0.0.1 set 0. */
export const ipColocationWeight = -5;
/** How long gossipsub keeps a disconnected peer's stats, and so its IP in P6's count (see above). */
export const retainScoreMs = 0;
/** P5's weight: one penalty point is one point of score. */
export const appSpecificWeight = 1;

/** The peer-score parameters of the host; `appSpecificScore` is the penalty table's score of a peer. */
export function gossipScoreParams(options: {
  readonly ipColocationWeight?: number;
  readonly appSpecificScore: (peerId: string) => number;
}): Partial<PeerScoreParams> {
  return {
    IPColocationFactorThreshold: ipColocationThreshold,
    IPColocationFactorWeight: options.ipColocationWeight ?? ipColocationWeight,
    retainScore: retainScoreMs,
    appSpecificScore: options.appSpecificScore,
    appSpecificWeight,
  };
}

/** A project topic's score parameters: without them gossipsub ignores invalid deliveries on the topic. */
export function topicScoreParams(): TopicScoreParams {
  return createTopicScoreParams({
    topicWeight: 1,
    timeInMeshWeight: 0.01,
    timeInMeshQuantum: 1000,
    timeInMeshCap: 3600,
    firstMessageDeliveriesWeight: 1,
    firstMessageDeliveriesDecay: 0.9,
    firstMessageDeliveriesCap: 100,
    meshMessageDeliveriesWeight: 0,
    meshFailurePenaltyWeight: 0,
    invalidMessageDeliveriesWeight: -100,
    invalidMessageDeliveriesDecay: 0.9,
  });
}
