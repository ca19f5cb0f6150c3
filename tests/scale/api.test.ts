/**
 * The scale API over real HTTP on 127.0.0.1, driving the Pulumi backend. The Pulumi engine cannot run here, so a stand-in stack records what the
 * backend asks of it and plays `pulumi up` output back.
 */
import { buildScaleApi, SCALE_PATH } from "../../scale/api";
import { AutomationStack, PulumiBackend } from "../../scale/pulumiBackend";

const TOKEN = "test-token-0123456789abcdefghijkl";

class EngineStandIn implements AutomationStack {
  config: Record<string, { value: string; secret?: boolean }> = {
    "madbase-state:nodeCount": { value: "3" },
    "madbase-state:plan": { value: "cx31" },
    "madbase-state:backupSecretKey": { value: "s3-secret-value", secret: true },
  };
  setCalls: string[] = [];
  ups = 0;
  private release: (() => void) | undefined;
  result = "succeeded";

  async getAllConfig() {
    return { ...this.config };
  }
  async setConfig(key: string, value: { value: string }) {
    this.setCalls.push(`${key}=${value.value}`);
    this.config[key] = value;
  }
  async up(opts: { onOutput: (out: string) => void }) {
    this.ups++;
    opts.onOutput("Updating (prod)\n  + hcloud:index/server:Server madbase-prod-4 created\n");
    await new Promise<void>((resolve) => (this.release = resolve));
    opts.onOutput("Resources: 8 created");
    return { summary: { result: this.result } };
  }
  finishUp() {
    this.release?.();
  }
}

interface Answer {
  statusCode: number;
  headers: Headers;
  json: () => any;
}

const servers: { close: () => Promise<unknown> }[] = [];
afterAll(() => Promise.all(servers.map((s) => s.close())));

async function setup() {
  const engine = new EngineStandIn();
  const { app, jobs } = buildScaleApi({ backend: new PulumiBackend("prod", async () => engine), token: TOKEN });
  const base = await app.listen({ host: "127.0.0.1", port: 0 });
  servers.push(app);
  const call = async (
    method: string,
    path: string,
    headers: Record<string, string>,
    body?: string,
  ): Promise<Answer> => {
    const res = await fetch(`${base}${path}`, { method, headers, body });
    const text = await res.text();
    return { statusCode: res.status, headers: res.headers, json: () => JSON.parse(text) };
  };
  const post = (payload: unknown, headers: Record<string, string> = { authorization: `Bearer ${TOKEN}` }) =>
    call(
      "POST",
      SCALE_PATH,
      { "content-type": "application/json", ...headers },
      typeof payload === "string" ? payload : JSON.stringify(payload),
    );
  const get = (id: string, headers: Record<string, string> = { authorization: `Bearer ${TOKEN}` }) =>
    call("GET", `${SCALE_PATH}/${id}`, headers);
  return { jobs, engine, post, get };
}

describe("scale API authentication", () => {
  it.each<[string, Record<string, string>]>([
    ["no header", {}],
    ["another scheme", { authorization: `Basic ${Buffer.from(`x:${TOKEN}`).toString("base64")}` }],
    ["a wrong token of the same length", { authorization: `Bearer ${TOKEN.replace(/.$/, "X")}` }],
    ["a prefix of the token", { authorization: `Bearer ${TOKEN.slice(0, 10)}` }],
    ["the token with more after it", { authorization: `Bearer ${TOKEN}extra` }],
  ])("refuses %s with 401 and starts nothing", async (_what, headers) => {
    const { post, get, engine } = await setup();
    const res = await post({ target_db_count: 5 }, headers);
    expect(res.statusCode).toBe(401);
    expect(res.headers.get("www-authenticate")).toMatch(/^Bearer/);
    expect(engine.setCalls).toEqual([]);
    const read = await get("anything", headers);
    expect(read.statusCode).toBe(401);
  });

  it("refuses to start with a short token", () => {
    expect(() =>
      buildScaleApi({ backend: new PulumiBackend("prod", async () => new EngineStandIn()), token: "short" }),
    ).toThrow(/at least 24 characters \(MADBASE_SCALE_API_TOKEN\)/);
  });
});

describe("scale API validation", () => {
  it.each<[unknown, string, RegExp]>([
    ['{"target_db_count": ', "body", /not valid JSON/],
    ["[3]", "body", /JSON object/],
    ['"five"', "body", /JSON object/],
    [{ target_db_count: "5" }, "target_db_count", /must be a number/],
    [{ target_db_count: 4 }, "target_db_count", /one of 1, 3, 5, 7/],
    [{ target_db_count: 0 }, "target_db_count", /one of 1, 3, 5, 7/],
    [{ target_db_count: 9 }, "target_db_count", /one of 1, 3, 5, 7/],
    [{ target_db_count: 3.5 }, "target_db_count", /whole number/],
    [{}, "target_db_count", /must be a number/],
    [{ target_db_count: 3, min_ha_nodes: "yes" }, "min_ha_nodes", /true or false/],
    [{ target_db_count: 1, min_ha_nodes: true }, "target_db_count", /below 3 while min_ha_nodes is true/],
    [{ target_db_count: 3, nodes: 3 }, "nodes", /unknown field/],
  ])("answers 400 for %p naming %s", async (payload, field, message) => {
    const { post, engine } = await setup();
    const res = await post(payload);
    expect(res.statusCode).toBe(400);
    expect(res.json()).toMatchObject({ field });
    expect(res.json().message).toMatch(message);
    expect(engine.setCalls).toEqual([]);
  });
});

describe("scale jobs through the Pulumi backend", () => {
  it("accepts a scale with 202, sets nodeCount, runs up, and reports the job and its log", async () => {
    const { post, get, engine, jobs } = await setup();
    const res = await post({ target_db_count: 5, min_ha_nodes: true });
    expect(res.statusCode).toBe(202);
    const { job_id: id, status_url: url } = res.json();
    expect(res.headers.get("location")).toBe(url);
    await new Promise((r) => setTimeout(r, 20));

    const running = (await get(id)).json();
    expect(running).toMatchObject({ id, state: "running", from: 3, target: 5, backend: "pulumi:prod" });
    expect(engine.setCalls).toEqual(["madbase-state:nodeCount=5"]);

    const busy = await post({ target_db_count: 7 });
    expect(busy.statusCode).toBe(409);
    expect(busy.json()).toMatchObject({ error: "busy", job_id: id });
    expect(engine.ups).toBe(1);

    engine.finishUp();
    await jobs.idle();
    const done = (await get(id)).json();
    expect(done.state).toBe("succeeded");
    expect(done.log.join("\n")).toMatch(/madbase-prod-4 created[\s\S]*Resources: 8 created[\s\S]*done$/);
    expect(JSON.stringify(done)).not.toContain("s3-secret-value");

    const next = await post({ target_db_count: 3 });
    expect(next.statusCode).toBe(202);
    engine.finishUp();
    await jobs.idle();
  });

  it("fails the job, naming the key, when the stack requires HA and the target is 1; nothing is changed", async () => {
    const { post, get, engine, jobs } = await setup();
    engine.config["madbase-state:requireHa"] = { value: "true" };
    const res = await post({ target_db_count: 1 });
    expect(res.statusCode).toBe(202);
    await jobs.idle();
    const job = (await get(res.json().job_id)).json();
    expect(job.state).toBe("failed");
    expect(job.error).toMatch(/madbase-state:nodeCount: 1 is not allowed; this stack requires HA/);
    expect(engine.setCalls).toEqual([]);
    expect(engine.ups).toBe(0);
  });

  it("reports a failed pulumi up as a failed job", async () => {
    const { post, get, engine, jobs } = await setup();
    engine.result = "failed";
    const res = await post({ target_db_count: 5 });
    engine.finishUp();
    await new Promise((r) => setTimeout(r, 20));
    engine.finishUp();
    await jobs.idle();
    const job = (await get(res.json().job_id)).json();
    expect(job).toMatchObject({ state: "failed", error: "pulumi up ended with result failed" });
  });

  it("answers 404 for an unknown job", async () => {
    const { get } = await setup();
    expect((await get("no-such-job")).statusCode).toBe(404);
  });
});
