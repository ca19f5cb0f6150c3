/**
 * The scale API: POST /api/v1/cluster/scale starts a job that moves the cluster to a node count;
 * GET /api/v1/cluster/scale/<id> reports it. One job at a time; bearer-token auth.
 */
import { createHash, timingSafeEqual } from "node:crypto";
import Fastify, { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import { z } from "zod";
import { ALLOWED_NODE_COUNTS } from "../core";
import { ScaleBackend } from "./backend";
import { ScaleBusyError, ScaleJobs } from "./jobs";

export const SCALE_PATH = "/api/v1/cluster/scale";
export const MIN_TOKEN_LENGTH = 24;

const scaleRequest = z
  .object({
    target_db_count: z
      .number({ error: "target_db_count must be a number" })
      .int({ error: "target_db_count must be a whole number" })
      .refine((n) => (ALLOWED_NODE_COUNTS as readonly number[]).includes(n), {
        error: `target_db_count must be one of ${ALLOWED_NODE_COUNTS.join(", ")} (an odd count keeps a majority)`,
      }),
    min_ha_nodes: z.boolean({ error: "min_ha_nodes must be true or false" }).default(false),
  })
  .strict();

/** Compares digests, so the time taken says nothing about the token's length or content. */
function tokenMatches(given: string, expected: string): boolean {
  const a = createHash("sha256").update(given).digest();
  const b = createHash("sha256").update(expected).digest();
  return timingSafeEqual(a, b);
}

function badRequest(reply: FastifyReply, field: string, message: string) {
  return reply.code(400).send({ error: "bad_request", field, message });
}

export function buildScaleApi(opts: { backend: ScaleBackend; token: string; logger?: boolean }): {
  app: FastifyInstance;
  jobs: ScaleJobs;
} {
  if (typeof opts.token !== "string" || opts.token.length < MIN_TOKEN_LENGTH) {
    throw new Error(`the scale API token must be at least ${MIN_TOKEN_LENGTH} characters (MADBASE_SCALE_API_TOKEN)`);
  }
  const jobs = new ScaleJobs(opts.backend);
  const app = Fastify({ logger: opts.logger ?? false, bodyLimit: 16 * 1024 });

  app.addHook("onRequest", async (request: FastifyRequest, reply: FastifyReply) => {
    const header = request.headers.authorization ?? "";
    const match = /^Bearer (\S+)$/.exec(header);
    if (!match || !tokenMatches(match[1], opts.token)) {
      return reply
        .code(401)
        .header("WWW-Authenticate", 'Bearer realm="madbase-scale"')
        .send({ error: "unauthorized", message: "send Authorization: Bearer <token>" });
    }
  });

  app.setErrorHandler((error: Error & { statusCode?: number; code?: string }, _request, reply) => {
    if (error.code === "FST_ERR_CTP_INVALID_MEDIA_TYPE") {
      return reply.code(415).send({ error: "unsupported_media_type", message: "send the body as application/json" });
    }
    if (error.statusCode === 400 || error.code === "FST_ERR_CTP_EMPTY_JSON_BODY") {
      return badRequest(reply, "body", `the body is not valid JSON: ${error.message}`);
    }
    if (error.statusCode === 413) return reply.code(413).send({ error: "too_large", message: "the body is too large" });
    reply.log.error(error);
    return reply.code(500).send({ error: "internal", message: "internal error; see the server log" });
  });

  app.post(SCALE_PATH, async (request, reply) => {
    const body = request.body;
    if (body === null || typeof body !== "object" || Array.isArray(body)) {
      return badRequest(reply, "body", 'send a JSON object such as {"target_db_count": 3, "min_ha_nodes": true}');
    }
    const parsed = scaleRequest.safeParse(body);
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      const field = issue.code === "unrecognized_keys" ? issue.keys.join(", ") : String(issue.path[0] ?? "body");
      const message =
        issue.code === "unrecognized_keys"
          ? `unknown field(s): ${issue.keys.join(", ")}; known: target_db_count, min_ha_nodes`
          : issue.message;
      return badRequest(reply, field, message);
    }
    const { target_db_count: target, min_ha_nodes: minHa } = parsed.data;
    if (minHa && target < 3) {
      return badRequest(
        reply,
        "target_db_count",
        `target_db_count ${target} is below 3 while min_ha_nodes is true; use 3, 5 or 7`,
      );
    }
    try {
      const job = jobs.start(target);
      return reply
        .code(202)
        .header("Location", `${SCALE_PATH}/${job.id}`)
        .send({ job_id: job.id, state: job.state, target_db_count: target, status_url: `${SCALE_PATH}/${job.id}` });
    } catch (e) {
      if (e instanceof ScaleBusyError) {
        return reply.code(409).send({ error: "busy", message: e.message, job_id: e.running.id });
      }
      throw e;
    }
  });

  app.get<{ Params: { id: string } }>(`${SCALE_PATH}/:id`, async (request, reply) => {
    const job = jobs.get(request.params.id);
    if (!job) return reply.code(404).send({ error: "not_found", message: `no scale job ${request.params.id}` });
    return reply.send(job);
  });

  return { app, jobs };
}
