import { ConfigError, PROFILES, checkProfile, getProfile } from "../../core";

describe("failover profiles", () => {
  it.each(Object.keys(PROFILES))("%s keeps loop_wait + 2*retry_timeout within ttl", (name) => {
    const { ttl, loopWait, retryTimeout } = getProfile(name).patroni;
    expect(loopWait + 2 * retryTimeout).toBeLessThanOrEqual(ttl);
  });

  it("orders the profiles from quickest to most patient", () => {
    const { fast, norm, safe } = PROFILES;
    expect(fast.patroni.ttl).toBeLessThan(norm.patroni.ttl);
    expect(norm.patroni.ttl).toBeLessThan(safe.patroni.ttl);
    expect(fast.sentinel.downAfterMs).toBeLessThan(norm.sentinel.downAfterMs);
    expect(norm.sentinel.downAfterMs).toBeLessThan(safe.sentinel.downAfterMs);
    // norm must leave room under the 30 s promise: a lost leader's key expires after ttl.
    expect(norm.patroni.ttl).toBeLessThan(30);
  });

  it("rejects a profile that breaks Patroni's timing rule, saying which values and the rule", () => {
    const broken = { ...PROFILES.fast, name: "broken", patroni: { ttl: 10, loopWait: 4, retryTimeout: 4 } };
    expect(() => checkProfile(broken)).toThrow(ConfigError);
    expect(() => checkProfile(broken)).toThrow(
      /failoverProfile\(broken\)\.patroni: .*"ttl":10.*"loop_wait":4.*"retry_timeout":4.* loop_wait \+ 2\*retry_timeout must be <= ttl \(here 4 \+ 2\*4 = 12 > 10\)/,
    );
  });

  it("rejects non-integer and non-positive Patroni timings", () => {
    expect(() => checkProfile({ ...PROFILES.norm, patroni: { ttl: 20, loopWait: 0, retryTimeout: 5 } })).toThrow(
      /failoverProfile.patroni.loopWait: 0 is not allowed/,
    );
    expect(() => checkProfile({ ...PROFILES.norm, patroni: { ttl: 20.5, loopWait: 5, retryTimeout: 5 } })).toThrow(/ttl: 20.5/);
  });

  it("rejects a Sentinel failover timeout shorter than its down detection", () => {
    const bad = { ...PROFILES.norm, sentinel: { downAfterMs: 5000, failoverTimeoutMs: 1000 } };
    expect(() => checkProfile(bad)).toThrow(/failover-timeout must be at least down-after-milliseconds/);
  });

  it.each([["quick"], ["FAST"], [""], [undefined]])("rejects unknown profile %p with the choices", (name) => {
    expect(() => getProfile(name)).toThrow(/^failoverProfile: .* is not allowed; use one of fast, norm, safe$/);
  });
});
