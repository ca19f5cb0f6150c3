// Lint: the recommended JavaScript and TypeScript rules (syntax-only: fast, no type information),
// Prettier owning the layout, and the one direction of imports the architecture asks for.
import js from "@eslint/js";
import tseslint from "typescript-eslint";
import prettier from "eslint-config-prettier";

/**
 * Imports a folder must not make: `core` imports nothing of ours and no Pulumi; `components` and
 * `local` only `core`; `ops` (the operations over SSH) `core` and `local`, no Pulumi engine.
 */
const forbid = (folders, message) => ({
  "no-restricted-imports": ["error", { patterns: folders.map((f) => ({ group: [`../${f}`, `../${f}/**`], message })) }],
});

export default tseslint.config(
  { ignores: ["node_modules/**", "**/*.js", "!eslint.config.mjs", ".local-cluster/**", "dashboards/**"] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  prettier,
  {
    rules: {
      // `const { dropped: _dropped, ...kept } = x` is how the code omits a field.
      "@typescript-eslint/no-unused-vars": [
        "error",
        { argsIgnorePattern: "^_", varsIgnorePattern: "^_", ignoreRestSiblings: true },
      ],
    },
  },
  {
    // Tests read parsed YAML and engine mocks whose shapes they assert; the program itself stays typed.
    files: ["tests/**/*.ts"],
    rules: { "@typescript-eslint/no-explicit-any": "off" },
  },
  {
    files: ["core/**/*.ts"],
    rules: {
      "no-restricted-imports": [
        "error",
        {
          patterns: [
            ...["components", "local", "ops", "cli", "scale", "bench", "tests"].map((f) => ({
              group: [`../${f}`, `../${f}/**`],
              message: "core is the pure core: it imports nothing of ours outside core.",
            })),
            {
              group: ["@pulumi/*"],
              message: "core is the pure core: no Pulumi in it (components/ feeds outputs into it).",
            },
          ],
        },
      ],
    },
  },
  {
    files: ["components/**/*.ts"],
    rules: forbid(
      ["local", "ops", "cli", "scale", "bench"],
      "components import core only (and each other), never the runners or commands.",
    ),
  },
  {
    files: ["local/**/*.ts"],
    rules: {
      "no-restricted-imports": [
        "error",
        {
          patterns: [
            ...["components", "ops", "cli", "scale", "bench"].map((f) => ({
              group: [`../${f}`, `../${f}/**`],
              message: "local imports core only: it provides machines and drives them, as Hetzner and Pulumi would.",
            })),
            { group: ["@pulumi/*"], message: "local runs without the Pulumi engine." },
          ],
        },
      ],
    },
  },
  {
    files: ["ops/**/*.ts"],
    rules: {
      "no-restricted-imports": [
        "error",
        {
          patterns: [
            ...["components", "cli", "scale", "bench"].map((f) => ({
              group: [`../${f}`, `../${f}/**`],
              message: "ops imports core and local only: it acts on the nodes over SSH, whichever runner made them.",
            })),
            {
              group: ["@pulumi/*"],
              message: "ops runs without the Pulumi engine (it reads a stack through the Pulumi CLI).",
            },
          ],
        },
      ],
    },
  },
);
