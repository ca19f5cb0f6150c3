import { ConfigError, PLANS, getPlan, postgresTuning } from "../../core";

const mb = (v: string) => Number(v.replace(/MB$/, ""));

describe("plans", () => {
  it.each([
    ["cx21", 8, 3, 100],
    ["cx31", 16, 4, 200],
    ["cx41", 32, 8, 500],
  ])("%s carries %i GB, %i CPU, %i connections", (name, memoryGb, cpus, maxConnections) => {
    expect(getPlan(name)).toMatchObject({ name, memoryGb, cpus, maxConnections });
  });

  it("maps each plan to an orderable Hetzner type (not the retired CX21/31/41)", () => {
    for (const plan of Object.values(PLANS)) {
      expect(plan.serverType).not.toMatch(/^cx[234]1$/);
      expect(plan.serverType).toMatch(/^c[a-z]*\d+$/);
    }
  });

  it.each([["cx11"], ["CX21"], [""], [undefined], [21]])("rejects plan %p naming the field and the choices", (name) => {
    expect(() => getPlan(name)).toThrow(ConfigError);
    expect(() => getPlan(name)).toThrow(/^plan: .* is not allowed; use one of cx21, cx31, cx41$/);
  });
});

describe("PostgreSQL tuning", () => {
  it.each(Object.values(PLANS))("derives $name memory settings from its RAM", (plan) => {
    const t = postgresTuning(plan);
    const ram = plan.memoryGb * 1024;
    expect(mb(t.local.shared_buffers)).toBe(ram / 4);
    expect(mb(t.local.effective_cache_size)).toBe((ram * 3) / 4);
    expect(t.cluster.max_connections).toBe(plan.maxConnections);
    // work_mem for every connection must fit in what shared_buffers leaves.
    expect(mb(t.local.work_mem) * plan.maxConnections).toBeLessThanOrEqual(ram - ram / 4);
    expect(mb(t.local.maintenance_work_mem)).toBeLessThanOrEqual(2048);
  });

  it("leaves replication room for the largest cluster on every plan", () => {
    for (const plan of Object.values(PLANS)) {
      const t = postgresTuning(plan);
      expect(t.cluster.max_wal_senders).toBeGreaterThanOrEqual(7);
      expect(t.cluster.max_replication_slots).toBeGreaterThanOrEqual(7);
    }
  });

  it("sizes memory for a smaller local machine but keeps the plan's connection limit", () => {
    const t = postgresTuning(PLANS.cx31, 512);
    expect(t.local.shared_buffers).toBe("128MB");
    expect(t.cluster.max_connections).toBe(200);
  });
});
