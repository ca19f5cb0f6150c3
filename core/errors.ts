/**
 * Every error of ours says what happened to a person and carries the exit code a command ends
 * with, so commands need no list of error classes: 2 when the request was refused and nothing
 * changed (fix the input or the state, run it again), 1 when something failed on the way and
 * what was done so far is left for inspection.
 */
export class MadbaseError extends Error {
  constructor(
    message: string,
    readonly exitCode: 1 | 2,
  ) {
    super(message);
    this.name = new.target.name;
  }
}

/** The request cannot be done as asked; nothing was changed. */
export class RefusedError extends MadbaseError {
  constructor(message: string) {
    super(message, 2);
  }
}

/** Something failed on the way; what was done so far stays for inspection. */
export class FailedError extends MadbaseError {
  constructor(message: string) {
    super(message, 1);
  }
}

/** A command line that cannot be understood (the command prints its usage after the message). */
export class UsageError extends RefusedError {}

/**
 * A configuration value that cannot be used. Every rejection names the field, the value that was
 * given and what is allowed, so the person reading it knows what to change without opening code.
 */
export class ConfigError extends RefusedError {
  constructor(
    readonly field: string,
    readonly value: unknown,
    readonly allowed: string,
  ) {
    super(`${field}: ${describe(value)} is not allowed; ${allowed}`);
  }
}

function describe(value: unknown): string {
  if (value === undefined) return "(missing)";
  if (typeof value === "string") return JSON.stringify(value);
  try {
    return JSON.stringify(value) ?? String(value);
  } catch {
    return String(value);
  }
}
