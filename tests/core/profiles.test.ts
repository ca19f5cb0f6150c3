import { ConfigError, PROFILES, checkProfile, getProfile } from "../../core";

describe("failover profiles", () => {
  it.each(Object.keys(PROFILES))("%s keeps loop_wait + 2*retry_timeout within ttl", (name) => {
    const { ttl, loopWait, retryTimeout } = getProfile(name).patroni;
    expect(loopWait + 2 * retryTimeout).toBeLessThanOrEqual(ttl);
  });

  it("orders the profiles from quickest to most patient", () => {
    const { fast, norm, safe } = PROFILES;
    // A dead leader is noticed ttl + loop_wait after its last renewal, at the latest.
    const detect = (p: typeof fast | typeof norm | typeof safe) => p.patroni.ttl + p.patroni.loopWait;
    expect(detect(fast)).toBeLessThan(detect(norm));
    expect(detect(norm)).toBeLessThan(detect(safe));
    expect(fast.sentinel.downAfterMs).toBeLessThan(norm.sentinel.downAfterMs);
    expect(norm.sentinel.downAfterMs).toBeLessThan(safe.sentinel.downAfterMs);
    // norm must leave room under the 30 s promise: a lost leader's key expires after ttl.
    expect(norm.patroni.ttl).toBeLessThan(30);
  });

  it("rejects a profile that breaks Patroni's timing rule, saying which values and the rule", () => {
    const broken = { ...PROFILES.fast, name: "broken", patroni: { ttl: 20, loopWait: 6, retryTimeout: 8 } };
    expect(() => checkProfile(broken)).toThrow(ConfigError);
    expect(() => checkProfile(broken)).toThrow(
      /failoverProfile\(broken\)\.patroni: .*"ttl":20.*"loop_wait":6.*"retry_timeout":8.* loop_wait \+ 2\*retry_timeout must be <= ttl \(here 6 \+ 2\*8 = 22 > 20\)/,
    );
  });

  it("rejects a ttl under Patroni 4's minimum, naming it", () => {
    const short = { ...PROFILES.fast, name: "short", patroni: { ttl: 7, loopWait: 1, retryTimeout: 3 } };
    expect(() => checkProfile(short)).toThrow(
      /failoverProfile\(short\)\.patroni\.ttl: 7 .*at least 20 \(Patroni 4's minimum/,
    );
  });

  it("rejects non-integer and non-positive Patroni timings", () => {
    expect(() => checkProfile({ ...PROFILES.norm, patroni: { ttl: 20, loopWait: 0, retryTimeout: 5 } })).toThrow(
      /failoverProfile.patroni.loopWait: 0 is not allowed/,
    );
    expect(() => checkProfile({ ...PROFILES.norm, patroni: { ttl: 20.5, loopWait: 5, retryTimeout: 5 } })).toThrow(
      /ttl: 20.5/,
    );
  });

  it("rejects a Sentinel failover timeout shorter than its down detection", () => {
    const bad = { ...PROFILES.norm, sentinel: { downAfterMs: 5000, failoverTimeoutMs: 1000 } };
    expect(() => checkProfile(bad)).toThrow(/failover-timeout must be at least down-after-milliseconds/);
  });

  it.each([["quick"], ["FAST"], [""], [undefined]])("rejects unknown profile %p with the choices", (name) => {
    expect(() => getProfile(name)).toThrow(/^failoverProfile: .* is not allowed; use one of fast, norm, safe$/);
  });
});
