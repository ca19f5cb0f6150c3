/**
 * Runs the Pulumi program (index.ts) under `pulumi.runtime.setMocks` and records everything it
 * declares: each resource's type, name, inputs as the provider would get them, the raw request
 * (secrets still wrapped, unknowns still unknown) and its resource options.
 *
 * Every run loads a fresh copy of the program and of @pulumi/pulumi (jest.resetModules), so each
 * case gets its own stack name, config and mocks.
 */
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { jest } from "@jest/globals";
import * as yaml from "js-yaml";
import * as pulumiRpc from "@pulumi/pulumi/runtime/rpc";

export const PROJECT = "madbase-state";
/** The Pulumi organization the mocks run the stack in (the program references itself by it). */
export const ORGANIZATION = "madbase";
const ROOT = path.resolve(__dirname, "..", "..");

/** Pulumi's markers in serialized properties (secrets, unknown values), from the SDK itself. */
const SIG_KEY = pulumiRpc.specialSigKey;
const SECRET_SIG = pulumiRpc.specialSecretSig;
export const UNKNOWN = pulumiRpc.unknownValue;

export interface ResourceOptions {
  protect?: boolean;
  ignoreChanges: string[];
  deleteBeforeReplace: boolean;
  deleteBeforeReplaceDefined: boolean;
  retainOnDelete?: boolean;
  deletedWith: string;
  dependencies: string[];
  parent: string;
}

export interface Declared {
  type: string;
  name: string;
  custom: boolean;
  /** The id the mock provider gave it (absent in preview and for components). */
  id?: string;
  /** Inputs as the provider receives them, with secrets revealed (see `raw` for which are secret). */
  inputs: Record<string, any>;
  /** The serialized inputs: secrets as Pulumi's secret envelopes, unknowns as the unknown marker. */
  raw: Record<string, any>;
  options: ResourceOptions;
}

export interface ResolvedOutput {
  known: boolean;
  secret: boolean;
  value: unknown;
}

export interface ProgramRun {
  /** Set when the program threw (a rejected config); resources then lists what got declared. */
  error?: Error;
  resources: Declared[];
  /** The program's exports, resolved. */
  outputs: Record<string, ResolvedOutput>;
  /** Everything written to the console while the program ran (pulumi.log lands there under mocks). */
  logs: string[];
  /** Every secret value the run handled: generated passwords and configured S3 keys. */
  secretValues: string[];
  /** The stacks the program read through a StackReference (read, not declared: not in `resources`). */
  stackReferences: string[];
}

export interface RunOptions {
  stack: string;
  /** `madbase-state:*` keys without the namespace; values as Pulumi passes them (strings). */
  config?: Record<string, string>;
  /** Keys (without namespace, or with another one: `hcloud:token`) stored as secrets. */
  secretConfig?: Record<string, string>;
  preview?: boolean;
  /**
   * The outputs of the stack's previous deployment, as the program's StackReference to itself reads
   * them (absent: a first `up`, no outputs). `secretOutputs` names those the backend marks secret.
   */
  previousOutputs?: Record<string, unknown>;
  secretOutputs?: string[];
  /**
   * A protected stack (prod) refuses to start without S3 keys, so runs of one get FIXTURE_S3_KEYS
   * unless they give keys themselves or set this (the tests of that refusal).
   */
  withoutBackupKeys?: boolean;
}

/** Well-formed S3 keys for protected stacks in tests that are not about the keys. */
export const FIXTURE_S3_KEYS = {
  backupAccessKey: "HZ1FIXTUREACCESSKEY0",
  backupSecretKey: "hZ2fixtureSecretKeyValue0123456789abcdef",
};

function withFixtureKeys(opts: RunOptions): RunOptions {
  const secret = opts.secretConfig ?? {};
  const protectedStack = /^true$/i.test(opts.config?.protectNodes ?? "");
  if (!protectedStack || opts.withoutBackupKeys || "backupAccessKey" in secret || "backupSecretKey" in secret)
    return opts;
  return { ...opts, secretConfig: { ...FIXTURE_S3_KEYS, ...secret } };
}

/** A deterministic numeric id per resource, so ids do not depend on declaration order. */
function numericId(type: string, name: string): string {
  return String(parseInt(crypto.createHash("sha256").update(`${type}::${name}`).digest("hex").slice(0, 8), 16));
}

/** Letters and digits, like @pulumi/random with `special: false`; unique per resource name. */
function fakePassword(name: string, length: number): string {
  let out = "";
  for (let i = 0; out.length < length; i++) {
    out += crypto
      .createHash("sha256")
      .update(`${name}#${i}`)
      .digest("base64")
      .replace(/[^A-Za-z0-9]/g, "");
  }
  return out.slice(0, length);
}

/** A PEM document of `bytes` bytes, derived from the resource's name (same name, same value). */
function fakePem(label: string, name: string, bytes: number): string {
  let der = Buffer.alloc(0);
  for (let i = 0; der.length < bytes; i++)
    der = Buffer.concat([der, crypto.createHash("sha256").update(`${label}:${name}#${i}`).digest()]);
  const body = der
    .subarray(0, bytes)
    .toString("base64")
    .replace(/(.{64})/g, "$1\n")
    .replace(/\n$/, "");
  return `-----BEGIN ${label}-----\n${body}\n-----END ${label}-----\n`;
}

/** Config values of a committed Pulumi.<stack>.yaml, as the Pulumi CLI would hand them over. */
export function stackFileConfig(stack: string): Record<string, string> {
  const doc = yaml.load(fs.readFileSync(path.join(ROOT, `Pulumi.${stack}.yaml`), "utf8")) as {
    config?: Record<string, unknown>;
  };
  const out: Record<string, string> = {};
  for (const [key, value] of Object.entries(doc.config ?? {})) {
    if (!key.startsWith(`${PROJECT}:`)) continue;
    out[key.slice(PROJECT.length + 1)] = typeof value === "string" ? value : JSON.stringify(value);
  }
  return out;
}

export async function runProgram(given: RunOptions): Promise<ProgramRun> {
  const opts = withFixtureKeys(given);
  // Every fresh copy of @pulumi/pulumi adds a process exit hook; a test file loads several.
  process.setMaxListeners(Math.max(process.getMaxListeners(), 100));
  const preview = opts.preview ?? false;
  jest.resetModules();
  const pulumi = await import("@pulumi/pulumi");
  const resources = new Map<string, Declared>();
  const secretValues: string[] = Object.values(opts.secretConfig ?? {});
  const logs: string[] = [];
  const stackReferences: string[] = [];

  await pulumi.runtime.setMocks(
    {
      newResource(args) {
        if (args.type === "pulumi:pulumi:StackReference") {
          // A read, not a registration: it never reaches `resources`.
          stackReferences.push(args.inputs.name);
          return {
            id: args.inputs.name,
            state: {
              name: args.inputs.name,
              outputs: opts.previousOutputs ?? {},
              secretOutputNames: opts.secretOutputs ?? [],
            },
          };
        }
        const state: Record<string, unknown> = { ...args.inputs };
        if (!preview) {
          if (args.type === "random:index/randomPassword:RandomPassword") {
            const result = fakePassword(args.name, args.inputs.length);
            secretValues.push(result);
            state.result = result;
          }
          // @pulumi/tls: PEM documents of the sizes the provider makes (P-256), unique per resource.
          if (args.type === "tls:index/privateKey:PrivateKey") {
            state.privateKeyPem = fakePem("EC PRIVATE KEY", args.name, 121);
            state.publicKeyPem = fakePem("PUBLIC KEY", args.name, 91);
            secretValues.push(state.privateKeyPem as string);
          }
          if (
            args.type === "tls:index/selfSignedCert:SelfSignedCert" ||
            args.type === "tls:index/locallySignedCert:LocallySignedCert"
          ) {
            state.certPem = fakePem("CERTIFICATE", args.name, args.inputs.isCaCertificate ? 400 : 500);
          }
          if (args.type === "tls:index/certRequest:CertRequest")
            state.certRequestPem = fakePem("CERTIFICATE REQUEST", args.name, 300);
          if (args.type === "hcloud:index/server:Server") {
            const n = Number(numericId(args.type, args.name)) % 250;
            state.ipv4Address = `203.0.113.${n + 1}`;
            state.ipv6Address = `2001:db8::${n + 1}`;
          }
        }
        const id = preview ? undefined : numericId(args.type, args.name);
        const entry = resources.get(`${args.type}::${args.name}`);
        if (entry) {
          entry.inputs = revealSecrets(args.inputs);
          if (args.custom) entry.id = id;
        }
        return { id, state };
      },
      call(args) {
        return args.inputs;
      },
    },
    PROJECT,
    opts.stack,
    preview,
    ORGANIZATION,
  );

  // Record each registration's options and raw inputs, then let the mock monitor handle it.
  const monitor = pulumi.runtime.getMonitor() as any;
  const register = monitor.registerResource.bind(monitor);
  monitor.registerResource = (req: any, callback: any) => {
    resources.set(`${req.getType()}::${req.getName()}`, {
      type: req.getType(),
      name: req.getName(),
      custom: req.getCustom(),
      inputs: {},
      raw: req.getObject()?.toJavaScript() ?? {},
      options: {
        protect: req.hasProtect?.() === false ? undefined : req.getProtect(),
        ignoreChanges: req.getIgnorechangesList(),
        deleteBeforeReplace: req.getDeletebeforereplace(),
        deleteBeforeReplaceDefined: req.getDeletebeforereplacedefined(),
        retainOnDelete: req.hasRetainondelete?.() === false ? undefined : req.getRetainondelete(),
        deletedWith: req.getDeletedwith(),
        dependencies: req.getDependenciesList(),
        parent: req.getParent(),
      },
    });
    return register(req, callback);
  };

  const config: Record<string, string> = {};
  // A key with a namespace of its own (`hcloud:token`) is taken as it is.
  const full = (k: string) => (k.includes(":") ? k : `${PROJECT}:${k}`);
  for (const [k, v] of Object.entries(opts.config ?? {})) config[full(k)] = v;
  for (const [k, v] of Object.entries(opts.secretConfig ?? {})) config[full(k)] = v;
  pulumi.runtime.setAllConfig(config, Object.keys(opts.secretConfig ?? {}).map(full));

  const capture =
    (level: string) =>
    (...args: unknown[]) => {
      logs.push(`${level}: ${args.map((a) => (typeof a === "string" ? a : safeStringify(a))).join(" ")}`);
    };
  const spies = (["log", "info", "warn", "error", "debug"] as const).map((level) =>
    jest.spyOn(console, level).mockImplementation(capture(level)),
  );

  let error: Error | undefined;
  let program: Record<string, unknown> = {};
  try {
    try {
      // index.ts is an async program (`export = async () => outputs`), as the Pulumi CLI runs it.
      const mod = (await import("../../index")) as unknown as { default: () => Promise<Record<string, unknown>> };
      program = await mod.default();
    } catch (e) {
      error = e as Error;
    }
    // Let every registration reach the mock monitor.
    await pulumi.runtime.disconnect();
    const outputs: Record<string, ResolvedOutput> = {};
    for (const [key, value] of Object.entries(program)) {
      if (key === "__esModule") continue;
      const out = pulumi.output(value) as any;
      outputs[key] = {
        known: await out.isKnown,
        secret: await out.isSecret,
        value: await out.promise(),
      };
    }
    return { error, resources: [...resources.values()], outputs, logs, secretValues, stackReferences };
  } finally {
    for (const spy of spies) spy.mockRestore();
  }
}

function safeStringify(value: unknown): string {
  try {
    return JSON.stringify(value) ?? String(value);
  } catch {
    return String(value);
  }
}

export function ofType(run: ProgramRun, type: string): Declared[] {
  return run.resources.filter((r) => r.type === type);
}

export const T = {
  server: "hcloud:index/server:Server",
  volume: "hcloud:index/volume:Volume",
  volumeAttachment: "hcloud:index/volumeAttachment:VolumeAttachment",
  firewall: "hcloud:index/firewall:Firewall",
  network: "hcloud:index/network:Network",
  subnet: "hcloud:index/networkSubnet:NetworkSubnet",
  placementGroup: "hcloud:index/placementGroup:PlacementGroup",
  sshKey: "hcloud:index/sshKey:SshKey",
  loadBalancer: "hcloud:index/loadBalancer:LoadBalancer",
  loadBalancerNetwork: "hcloud:index/loadBalancerNetwork:LoadBalancerNetwork",
  loadBalancerTarget: "hcloud:index/loadBalancerTarget:LoadBalancerTarget",
  loadBalancerService: "hcloud:index/loadBalancerService:LoadBalancerService",
  password: "random:index/randomPassword:RandomPassword",
  privateKey: "tls:index/privateKey:PrivateKey",
  selfSignedCert: "tls:index/selfSignedCert:SelfSignedCert",
  certRequest: "tls:index/certRequest:CertRequest",
  locallySignedCert: "tls:index/locallySignedCert:LocallySignedCert",
} as const;

/**
 * Strings in a serialized value that are not inside a secret envelope. A secret value must never
 * turn up among them.
 */
export function plainStrings(value: unknown, out: string[] = []): string[] {
  if (typeof value === "string") out.push(value);
  else if (Array.isArray(value)) value.forEach((v) => plainStrings(v, out));
  else if (value && typeof value === "object") {
    const obj = value as Record<string, unknown>;
    if (obj[SIG_KEY] === SECRET_SIG) return out;
    Object.values(obj).forEach((v) => plainStrings(v, out));
  }
  return out;
}

/** The value with every secret envelope replaced by what it holds. */
export function revealSecrets(value: any): any {
  if (Array.isArray(value)) return value.map(revealSecrets);
  if (value && typeof value === "object") {
    if (value[SIG_KEY] === SECRET_SIG) return revealSecrets(value.value);
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, revealSecrets(v)]));
  }
  return value;
}

/** A serialized value with every secret envelope replaced by "[secret]". */
export function maskSecrets(value: any): any {
  if (Array.isArray(value)) return value.map(maskSecrets);
  if (value && typeof value === "object") {
    if (value[SIG_KEY] === SECRET_SIG) return "[secret]";
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, maskSecrets(v)]));
  }
  return value;
}

/** True when the serialized value at `key` is wrapped as a secret. */
export function isSecretEnvelope(value: unknown): boolean {
  return !!value && typeof value === "object" && (value as Record<string, unknown>)[SIG_KEY] === SECRET_SIG;
}
