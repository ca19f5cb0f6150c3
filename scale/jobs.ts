import { randomUUID } from "node:crypto";
import { ScaleBackend } from "./backend";
import { RefusedError } from "../core";

export type JobState = "running" | "succeeded" | "failed";

export interface ScaleJob {
  id: string;
  backend: string;
  from: number | null;
  target: number;
  state: JobState;
  createdAt: string;
  finishedAt: string | null;
  error: string | null;
  log: string[];
}

export class ScaleBusyError extends RefusedError {
  constructor(readonly running: ScaleJob) {
    super(`scale job ${running.id} (to ${running.target} nodes) is still running; wait for it to finish`);
  }
}

/** Keeps a bounded log: a long `pulumi up` must not grow the API's memory without end. */
const MAX_LOG_LINES = 5000;
/** Finished jobs kept for GET. */
const MAX_JOBS = 100;

/** Runs one scale job at a time and keeps recent jobs for status queries. */
export class ScaleJobs {
  private readonly jobs = new Map<string, ScaleJob>();
  private running: ScaleJob | null = null;
  private current: Promise<void> = Promise.resolve();

  constructor(private readonly backend: ScaleBackend) {}

  get(id: string): ScaleJob | undefined {
    return this.jobs.get(id);
  }

  /** Starts a job, or throws ScaleBusyError while another runs. Returns at once. */
  start(target: number): ScaleJob {
    if (this.running) throw new ScaleBusyError(this.running);
    const job: ScaleJob = {
      id: randomUUID(),
      backend: this.backend.name,
      from: null,
      target,
      state: "running",
      createdAt: new Date().toISOString(),
      finishedAt: null,
      error: null,
      log: [],
    };
    this.running = job;
    this.remember(job);
    this.current = this.run(job);
    return job;
  }

  /** Resolves when the job started last has finished (for shutdown and tests). */
  idle(): Promise<void> {
    return this.current;
  }

  private async run(job: ScaleJob): Promise<void> {
    const log = (line: string) => {
      job.log.push(`${new Date().toISOString()} ${line}`);
      if (job.log.length > MAX_LOG_LINES) job.log.splice(0, job.log.length - MAX_LOG_LINES);
    };
    try {
      job.from = await this.backend.currentCount();
      log(`scaling ${this.backend.name} from ${job.from} to ${job.target} node(s)`);
      await this.backend.scale(job.target, log);
      job.state = "succeeded";
      log("done");
    } catch (e) {
      job.state = "failed";
      job.error = (e as Error).message;
      log(`failed: ${job.error}`);
    } finally {
      job.finishedAt = new Date().toISOString();
      this.running = null;
    }
  }

  private remember(job: ScaleJob): void {
    this.jobs.set(job.id, job);
    for (const id of this.jobs.keys()) {
      if (this.jobs.size <= MAX_JOBS) break;
      if (this.jobs.get(id)!.state !== "running") this.jobs.delete(id);
    }
  }
}
