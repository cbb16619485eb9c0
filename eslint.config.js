// ESLint over src, test, bench, scripts and bin: typescript-eslint's type-checked rules, above all
// the promise rules (a forgotten await in a queue consumer acks a message whose work never finished).
import js from '@eslint/js';
import { defineConfig, globalIgnores } from 'eslint/config';
import tseslint from 'typescript-eslint';

export default defineConfig(
  // Migrations are written by `svc migrate create` and reviewed as SQL.
  globalIgnores(['dist/', 'migrations/', '.svc/']),
  js.configs.recommended,
  tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: {
      parserOptions: {
        projectService: {
          // The JavaScript entry points, scripts and configs are outside tsconfig.json; they are
          // type-checked with its options.
          allowDefaultProject: ['bin/*.js', 'scripts/*.mjs', '*.js', '*.cjs'],
          defaultProject: 'tsconfig.json',
        },
        tsconfigRootDir: import.meta.dirname,
      },
    },
    linterOptions: { reportUnusedDisableDirectives: 'error' },
    rules: {
      // TypeScript resolves every name (tsc, and the type-aware parser for the .js files).
      'no-undef': 'off',
      '@typescript-eslint/no-floating-promises': [
        'error',
        {
          // node:test's test() and describe() return promises the runner awaits itself; a test
          // file calls them at top level without await by design. t.test() inside a test is not
          // on this list: an un-awaited subtest is cancelled when its parent ends.
          allowForKnownSafeCalls: [{ from: 'package', package: 'node:test', name: ['test', 'it', 'describe', 'suite'] }],
        },
      ],
      '@typescript-eslint/no-misused-promises': 'error',
      '@typescript-eslint/await-thenable': 'error',
      // From strict-type-checked: returning a promise from inside try/catch without await skips the catch.
      '@typescript-eslint/return-await': ['error', 'error-handling-correctness-only'],
      // From strict-type-checked: a switch over an error code or a status handles every member.
      '@typescript-eslint/switch-exhaustiveness-check': ['error', { considerDefaultExhaustiveForUnions: true }],
      // `_`-prefixed names and rest siblings are how the code drops fields (`{ d: _d, ...publicJwk }`).
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_', caughtErrors: 'none', ignoreRestSiblings: true }],
    },
  },
  {
    // fastify plugins and route handlers are async by contract (avvio waits on a plugin's promise,
    // an async handler's return value is the reply), awaited or not.
    files: ['src/server/**/*.ts', 'bench/anchor-*.ts'],
    rules: { '@typescript-eslint/require-await': 'off' },
  },
  {
    // Tests read JSON bodies as `Json` (Record<string, any>) and assert their shape at run time;
    // typing every body would rewrite each test and find nothing the assertions do not.
    files: ['test/**/*.ts'],
    rules: {
      '@typescript-eslint/no-explicit-any': 'off',
      '@typescript-eslint/no-unsafe-argument': 'off',
      '@typescript-eslint/no-unsafe-assignment': 'off',
      '@typescript-eslint/no-unsafe-call': 'off',
      '@typescript-eslint/no-unsafe-member-access': 'off',
      '@typescript-eslint/no-unsafe-return': 'off',
    },
  },
);
