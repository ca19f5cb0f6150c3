/**
 * The local node image: one Debian 13 root file system that every local node boots (each through
 * an overlay of its own, see local/machine.ts). It holds what Hetzner's `debian-13` image holds
 * plus the packages the user data installs (core's NODE_PACKAGES), so cloud-init finds them
 * installed and a first boot takes seconds. Built once with mmdebstrap (scripts/image/build.sh)
 * and cached outside the repository, under a name that is the hash of the build scripts and the
 * package lists: a new package list builds a new image, an unchanged one is reused.
 */
import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { FailedError, NODE_PACKAGES } from "../core";

/**
 * What Hetzner's debian-13 image brings that a node relies on: systemd as init, cloud-init and
 * sshd (how Pulumi reaches a node), the tools the mount script uses (blkid, mkfs.ext4), nftables.
 * `locales`: cloud-init's locale module needs it, and Hetzner's image has it.
 */
export const BASE_PACKAGES = [
  "systemd-sysv",
  "udev",
  "dbus",
  "cloud-init",
  "openssh-server",
  "locales",
  "iproute2",
  "ca-certificates",
  "netbase",
  "e2fsprogs",
  "util-linux",
  "procps",
  "nftables",
  "less",
] as const;

const SCRIPT_DIR = path.resolve(__dirname, "..", "scripts", "image");
const BUILD_SCRIPT = path.join(SCRIPT_DIR, "build.sh");

/** Images live here unless MADBASE_IMAGE_CACHE says otherwise (never inside the repository). */
export function imageCacheDir(): string {
  return path.resolve(process.env.MADBASE_IMAGE_CACHE ?? "/var/cache/madbase-state/images");
}

export type ImageKind = "baked" | "base";

/** The packages an image holds: `base` is Hetzner's image alone (cloud-init then installs the rest). */
export function imagePackages(kind: ImageKind): { base: string[]; node: string[] } {
  return { base: [...BASE_PACKAGES], node: kind === "baked" ? [...NODE_PACKAGES] : [] };
}

/** The image's name: its kind and the hash of everything that decides its content. */
export function imageName(kind: ImageKind): string {
  const hash = createHash("sha256");
  for (const file of fs.readdirSync(SCRIPT_DIR).sort())
    hash.update(file).update(fs.readFileSync(path.join(SCRIPT_DIR, file)));
  const { base, node } = imagePackages(kind);
  hash.update(JSON.stringify({ base, node }));
  return `trixie-${kind}-${hash.digest("hex").slice(0, 12)}`;
}

export class ImageBuildError extends FailedError {
  constructor(kind: ImageKind, code: number | null, tail: string) {
    super(
      `building the ${kind} node image failed (exit ${code}); the last lines of mmdebstrap:\n${tail}\n` +
        "Is Debian's mirror reachable, and mmdebstrap installed (bash scripts/setup-debian.sh)?",
    );
  }
}

/**
 * The root directory of the image, built first when it is missing (about a minute, with progress).
 * A build holds a lock (flock), so two runners never build the same image at once.
 */
export async function ensureImage(
  opts: { kind?: ImageKind; onProgress?: (line: string) => void } = {},
): Promise<string> {
  const kind = opts.kind ?? "baked";
  const cache = imageCacheDir();
  const root = path.join(cache, imageName(kind));
  if (fs.existsSync(path.join(root, "etc", "os-release"))) return root;
  fs.mkdirSync(cache, { recursive: true });
  const progress = opts.onProgress ?? (() => undefined);
  progress(`Building the ${kind} node image ${path.basename(root)} with mmdebstrap (once; about a minute)`);
  const { base, node } = imagePackages(kind);
  const startedAt = Date.now();
  const tail: string[] = [];
  const code = await new Promise<number | null>((resolve) => {
    // Checked again under the lock: another runner may have built it while this one waited.
    const child = spawn(
      "flock",
      [
        path.join(cache, ".build.lock"),
        "sh",
        "-c",
        '[ -f "$1/etc/os-release" ] || exec bash "$2" "$1" "$3" "$4"',
        "sh",
        root,
        BUILD_SCRIPT,
        base.join(","),
        node.join(","),
      ],
      {
        stdio: ["ignore", "pipe", "pipe"], // The baked image keeps the packages it downloaded: they are the apt repository a test serves
        // to a node booted the Hetzner way (from the base image, cloud-init installing everything).
        env: { ...process.env, KEEP_DEBS: kind === "baked" ? "1" : "0" },
      },
    );
    const onData = (chunk: Buffer) => {
      for (const line of chunk.toString().split("\n").filter(Boolean)) {
        tail.push(line);
        if (tail.length > 20) tail.shift();
        // mmdebstrap's own steps ("I: ...") are the progress worth showing.
        if (/^I: |^build-image:/.test(line))
          progress(`  [${((Date.now() - startedAt) / 1000).toFixed(0).padStart(3)} s] ${line}`);
      }
    };
    child.stdout.on("data", onData);
    child.stderr.on("data", onData);
    child.on("error", () => resolve(null));
    child.on("exit", (c) => resolve(c));
  });
  if (code !== 0 || !fs.existsSync(path.join(root, "etc", "os-release")))
    throw new ImageBuildError(kind, code, tail.join("\n"));
  pruneImages(cache, kind, root, progress);
  return root;
}

/** How many built images of a kind stay in the cache: switching between branches whose package lists differ does not rebuild. */
const IMAGES_KEPT = 3;

/**
 * Removes the older images of a kind (about 800 MB each) once a new one is built: all but the
 * newest few, and never one a running machine still boots from (an overlay's lower layer).
 */
function pruneImages(cache: string, kind: ImageKind, keep: string, progress: (line: string) => void): void {
  const mounts = fs.readFileSync("/proc/self/mounts", "utf8");
  const older = fs
    .readdirSync(cache)
    .map((name) => ({ name, dir: path.join(cache, name) }))
    .filter(({ name, dir }) => dir !== keep && name.startsWith(`trixie-${kind}-`) && !name.endsWith(".partial"))
    .sort((a, b) => fs.statSync(b.dir).mtimeMs - fs.statSync(a.dir).mtimeMs)
    .slice(IMAGES_KEPT - 1);
  for (const { name, dir } of older) {
    if (mounts.includes(`lowerdir=${dir},`) || mounts.includes(`lowerdir=${dir} `)) continue;
    progress(`  removing the older node image ${name}`);
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** A user's uid and gid inside the image (its packages created them; they differ from the host's). */
export function imageUser(root: string, user: string): { uid: number; gid: number } {
  const line = fs
    .readFileSync(path.join(root, "etc", "passwd"), "utf8")
    .split("\n")
    .find((l) => l.startsWith(`${user}:`));
  if (!line) throw new Error(`the node image at ${root} has no user ${user}`);
  const [, , uid, gid] = line.split(":");
  return { uid: Number(uid), gid: Number(gid) };
}
