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
  // The quickest Patroni 4 allows: it refuses a ttl under 20 s (and raises it to 20 at run time),
  // so a lost leader's key lives 20 s whatever the profile. What fast buys is the rest: the loop
  // runs every second (the new leader is elected, and its synchronous standby set up, within a
  // second of the key's expiry), HAProxy checks twice as often, Sentinel gives up on a master in 3 s.
  // (On Patroni 3.0.2, ttl 7 / loop_wait 1 / retry 3 gave an 8.0 s median: bench/RESULTS.md.)
  fast: {
    name: "fast",
    patroni: { ttl: 20, loopWait: 1, retryTimeout: 5 },
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

/** Patroni 4 refuses a shorter ttl at --validate-config, and silently raises it at run time. */
export const PATRONI_MIN_TTL = 20;

/**
 * Timings Patroni would change behind our back are refused here, where the field can be named:
 * a ttl under Patroni's minimum, and a loop plus two DCS retries that do not fit inside the ttl
 * (a healthy leader could then lose its lock while it is still retrying).
 */
export function checkProfile(profile: FailoverProfile): FailoverProfile {
  const { ttl, loopWait, retryTimeout } = profile.patroni;
  for (const [key, value] of Object.entries(profile.patroni)) {
    if (!Number.isInteger(value) || value < 1) {
      throw new ConfigError(`failoverProfile.patroni.${key}`, value, "use a whole number of seconds, at least 1");
    }
  }
  if (ttl < PATRONI_MIN_TTL) {
    throw new ConfigError(
      `failoverProfile(${profile.name}).patroni.ttl`,
      ttl,
      `use at least ${PATRONI_MIN_TTL} (Patroni 4's minimum; it would raise it anyway)`,
    );
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
    throw new ConfigError(
      `failoverProfile(${profile.name}).haproxy`,
      profile.haproxy,
      "inter >= 100 ms, fall >= 1, rise >= 1",
    );
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
