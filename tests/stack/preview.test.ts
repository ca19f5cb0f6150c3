/**
 * `pulumi preview` on a new stack: ids, addresses and generated passwords are not known yet. The
 * program must still declare everything, with the unknowns left unknown, and not crash.
 */
import { T, UNKNOWN, isSecretEnvelope, ofType, runProgram, stackFileConfig } from "./harness";

describe.each([
  ["dev", stackFileConfig("dev"), 1],
  ["prod", stackFileConfig("prod"), 3],
  ["prod", { ...stackFileConfig("prod"), nodeCount: "7" }, 7],
])("preview of %s", (stack, config, servers) => {
  test(`declares ${servers} server(s) with unknown ids and passwords left unknown`, async () => {
    const run = await runProgram({ stack, config, preview: true });
    expect(run.error).toBeUndefined();
    const declared = ofType(run, T.server);
    expect(declared).toHaveLength(servers);
    for (const s of declared) {
      // Fixed inputs are known even in a preview...
      expect(s.inputs.networks[0].ip).toMatch(/^10\.42\.1\.\d+$/);
      expect(s.inputs.name).toBe(s.name);
      // ...while ids of resources not yet created, and user data built from passwords not yet
      // generated, are unknown (and the user data still marked secret).
      expect(s.raw.firewallIds).toEqual([UNKNOWN]);
      expect(s.raw.placementGroupId).toBe(UNKNOWN);
      const userData = s.raw.userData;
      expect(userData === UNKNOWN || (isSecretEnvelope(userData) && userData.value === UNKNOWN)).toBe(true);
    }
    expect(run.outputs.databaseUrl.known).toBe(false);
    expect(run.outputs.redisUrl.known).toBe(false);
    // What does not depend on a created resource is known.
    expect(run.outputs.patroniScope).toMatchObject({ known: true, value: `madbase-${stack}` });
    expect(run.outputs.entryPoint.known).toBe(true);
  });
});
