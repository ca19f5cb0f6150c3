import { ConfigError } from "./errors";

/**
 * How quickly the cluster decides a member is gone. One profile sets every detector together so
 * Patroni, HAProxy and Sentinel agree on what "down" means.
 */
export interface FailoverProfile {
  name: string;
  patroni: { ttl: number; loopWait: number; retryTimeout: number };
  haproxy: { interMs: number; fall: number; rise: number };
  sentinel: { downAfterMs: number; failoverTimeoutMs: number };
}

export const PROFILES = {
  // ~10 s to a new primary; needs a quiet network and CPU headroom. Measured locally (bench/RESULTS.md):
  // ttl 10 / loop_wait 2 / inter 1 s gave a 13.5 s median, so the leader key expires sooner, the
  // loop (which also sets up the new synchronous standby) runs every second, HAProxy checks twice as often.
  fast: {
    name: "fast",
    patroni: { ttl: 7, loopWait: 1, retryTimeout: 3 },
    haproxy: { interMs: 500, fall: 2, rise: 2 },
    sentinel: { downAfterMs: 3000, failoverTimeoutMs: 10000 },
  },
  // The default: well under the 30 s promise, tolerant of short hiccups (HAProxy drops a server
  // after 3 s of failed checks, Sentinel a master after 4 s). Measured with down-after 5000 ms and
  // checks every 2 s, Redis took 8.4 s to fail over (target 7 s): 5 s down-after, ~1.5 s for the
  // Sentinels' election and promotion, up to 2 × 1 s of HAProxy checks before the new master is UP.
  norm: {
    name: "norm",
    patroni: { ttl: 20, loopWait: 5, retryTimeout: 5 },
    haproxy: { interMs: 1000, fall: 3, rise: 2 },
    sentinel: { downAfterMs: 4000, failoverTimeoutMs: 30000 },
  },
  // Patroni's own defaults: slowest, fewest false alarms on a busy or flaky network.
  safe: {
    name: "safe",
    patroni: { ttl: 30, loopWait: 10, retryTimeout: 10 },
    haproxy: { interMs: 3000, fall: 3, rise: 3 },
    sentinel: { downAfterMs: 10000, failoverTimeoutMs: 60000 },
  },
} as const satisfies Record<string, FailoverProfile>;

export type ProfileName = keyof typeof PROFILES;
export const PROFILE_NAMES = Object.keys(PROFILES) as ProfileName[];
export const DEFAULT_PROFILE: ProfileName = "norm";

export function getProfile(name: unknown): FailoverProfile {
  if (typeof name === "string" && Object.prototype.hasOwnProperty.call(PROFILES, name)) {
    return checkProfile(PROFILES[name as ProfileName]);
  }
  throw new ConfigError("failoverProfile", name, `use one of ${PROFILE_NAMES.join(", ")}`);
}

/**
 * Patroni 3.0.2 accepts timings under which a healthy leader can lose its lock while it is still
 * retrying the DCS: its whole loop plus two retries must fit inside the TTL.
 */
export function checkProfile(profile: FailoverProfile): FailoverProfile {
  const { ttl, loopWait, retryTimeout } = profile.patroni;
  for (const [key, value] of Object.entries(profile.patroni)) {
    if (!Number.isInteger(value) || value < 1) {
      throw new ConfigError(`failoverProfile.patroni.${key}`, value, "use a whole number of seconds, at least 1");
    }
  }
  if (loopWait + 2 * retryTimeout > ttl) {
    throw new ConfigError(
      `failoverProfile(${profile.name}).patroni`,
      { ttl, loop_wait: loopWait, retry_timeout: retryTimeout },
      `loop_wait + 2*retry_timeout must be <= ttl (here ${loopWait} + 2*${retryTimeout} = ${loopWait + 2 * retryTimeout} > ${ttl}); raise ttl or lower the others`,
    );
  }
  const { interMs, fall, rise } = profile.haproxy;
  if (interMs < 100 || fall < 1 || rise < 1) {
    throw new ConfigError(`failoverProfile(${profile.name}).haproxy`, profile.haproxy, "inter >= 100 ms, fall >= 1, rise >= 1");
  }
  if (profile.sentinel.failoverTimeoutMs < profile.sentinel.downAfterMs) {
    throw new ConfigError(
      `failoverProfile(${profile.name}).sentinel`,
      profile.sentinel,
      "failover-timeout must be at least down-after-milliseconds",
    );
  }
  return profile;
}
