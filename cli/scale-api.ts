/**
 * npm run scale-api -- [--backend local|pulumi] [--stack NAME] [--host 127.0.0.1] [--port 8001]
 *
 * The scale API over HTTP: POST /api/v1/cluster/scale {"target_db_count": 5, "min_ha_nodes": true}
 * starts a job, GET /api/v1/cluster/scale/<id> reports it. Every request needs
 * `Authorization: Bearer $MADBASE_SCALE_API_TOKEN`; the server refuses to start without one.
 *
 *  - local:  scales the local cluster (MADBASE_LOCAL_ROOT / MADBASE_LOCAL_NET, as `npm run local`).
 *  - pulumi: sets madbase-state:nodeCount on the stack and runs `pulumi up` (Automation API).
 */
import { parseArgs } from "node:util";
import { UsageError } from "../core";
import { buildScaleApi, SCALE_PATH } from "../scale/api";
import { ScaleBackend } from "../scale/backend";
import { LocalBackend } from "../scale/localBackend";
import { PulumiBackend } from "../scale/pulumiBackend";

const USAGE =
  "usage: MADBASE_SCALE_API_TOKEN=... npm run scale-api -- [--backend local|pulumi] [--stack NAME] [--host 127.0.0.1] [--port 8001]";

export interface ScaleApiOptions {
  backend: "local" | "pulumi";
  stack?: string;
  host: string;
  port: number;
}

export function parseOptions(argv: string[]): ScaleApiOptions {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        backend: { type: "string", default: "local" },
        stack: { type: "string" },
        host: { type: "string", default: "127.0.0.1" },
        port: { type: "string", default: "8001" },
      },
      strict: true,
      allowPositionals: false,
    }));
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  if (values.backend !== "local" && values.backend !== "pulumi")
    throw new UsageError(`--backend ${JSON.stringify(values.backend)}: use local or pulumi`);
  if (values.backend === "pulumi" && !values.stack)
    throw new UsageError("--backend pulumi needs --stack, such as --stack prod");
  const port = Number(values.port);
  if (!Number.isInteger(port) || port < 1 || port > 65535)
    throw new UsageError(`--port ${JSON.stringify(values.port)}: use a TCP port, 1-65535`);
  return { backend: values.backend, stack: values.stack, host: values.host!, port };
}

function backendFor(opts: ScaleApiOptions): ScaleBackend {
  if (opts.backend === "pulumi") return new PulumiBackend(opts.stack!);
  return new LocalBackend({
    root: process.env.MADBASE_LOCAL_ROOT || undefined,
    networkId: process.env.MADBASE_LOCAL_NET || undefined,
  });
}

async function main(): Promise<number> {
  let opts: ScaleApiOptions;
  try {
    opts = parseOptions(process.argv.slice(2));
  } catch (e) {
    if (!(e instanceof UsageError)) throw e;
    console.error(`scale-api: ${e.message}\n${USAGE}`);
    return 2;
  }
  const token = process.env.MADBASE_SCALE_API_TOKEN;
  if (!token) {
    console.error(
      `scale-api: MADBASE_SCALE_API_TOKEN is not set; refusing to start an API that scales the cluster without authentication.\n${USAGE}`,
    );
    return 2;
  }
  let api;
  try {
    api = buildScaleApi({ backend: backendFor(opts), token, logger: true });
  } catch (e) {
    console.error(`scale-api: ${(e as Error).message}`);
    return 2;
  }
  const { app, jobs } = api;
  if (!["127.0.0.1", "::1", "localhost"].includes(opts.host)) {
    app.log.warn(
      `listening on ${opts.host}: the API speaks plain HTTP; put it behind TLS before it leaves this machine`,
    );
  }
  await app.listen({ host: opts.host, port: opts.port });
  app.log.info(
    `scale API (${opts.backend}${opts.stack ? `:${opts.stack}` : ""}) at http://${opts.host}:${opts.port}${SCALE_PATH}`,
  );

  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) {
      app.log.warn(`${signal} again: exiting now; a scale job may be left half-way`);
      process.exit(1);
    }
    stopping = true;
    app.log.info(
      `${signal}: no new jobs; waiting for a running scale job to finish (send ${signal} again to exit now)`,
    );
    await app.close();
    await jobs.idle();
    process.exit(0);
  };
  process.on("SIGINT", () => void stop("SIGINT"));
  process.on("SIGTERM", () => void stop("SIGTERM"));
  return 0;
}

if (require.main === module) {
  main().then(
    (code) => {
      if (code !== 0) process.exitCode = code;
    },
    (e) => {
      console.error(`scale-api: ${(e as Error).stack ?? e}`);
      process.exitCode = 1;
    },
  );
}
