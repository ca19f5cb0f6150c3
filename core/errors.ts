/**
 * A configuration value that cannot be used. Every rejection names the field, the value that was
 * given and what is allowed, so the person reading it knows what to change without opening code.
 */
export class ConfigError extends Error {
  constructor(
    readonly field: string,
    readonly value: unknown,
    readonly allowed: string,
  ) {
    super(`${field}: ${describe(value)} is not allowed; ${allowed}`);
    this.name = "ConfigError";
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
