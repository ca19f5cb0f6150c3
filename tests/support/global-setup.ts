/**
 * Before any test: the node image every end-to-end test boots, built once (about a minute on a
 * new machine, with mmdebstrap's progress on stderr) and reused from its cache afterwards, so no
 * single test's timeout has to hold an image build.
 */
import { ensureImage } from "../../local/image";

export default async function globalSetup(): Promise<void> {
  if (process.getuid?.() !== 0) return; // the end-to-end tests need root and say so themselves
  const root = await ensureImage({ onProgress: (line) => process.stderr.write(`${line}\n`) });
  process.stderr.write(`node image: ${root}\n`);
}
