// The layer rules of DESIGN.md ("dependencies point down only") as code: `npm run depcruise`.
// Layers, top to bottom: bin/ and src/commands.ts; src/commands/** and src/cli/**; src/server/**
// and src/worker/**; src/app.ts and src/config.ts (the composition root); src/domain/** and
// src/adapters/** (the adapters implement the domain's ports).
/** @type {import('dependency-cruiser').IConfiguration} */
module.exports = {
  forbidden: [
    {
      name: 'no-circular',
      severity: 'error',
      comment:
        'Modules import each other in a cycle: one of them belongs in a lower layer. Cycles closed only by type-only imports ' +
        '(Ctx and its CursorCodec; the embedded share and the Orm type) are erased by the compiler and do not count.',
      from: { path: '^(src|test|bench)/' },
      to: { circular: true, viaOnly: { dependencyTypesNot: ['type-only'] } },
    },
    {
      name: 'domain-imports-no-edge-or-adapter',
      severity: 'error',
      comment:
        'The domain (entities, services, ports, errors) knows nothing of HTTP, the CLI, the worker, the adapters that implement its ports, or the composition root.',
      from: { path: '^src/domain/' },
      to: { path: '^src/(server|commands|cli|worker|adapters)/|^src/(app|commands|config)\\.ts$' },
    },
    {
      name: 'domain-imports-no-framework-or-service-sdk',
      severity: 'error',
      comment: 'No fastify, oclif, AMQP, Stripe, SendGrid, AWS, Redis or CLI-rendering packages in the domain: they belong to the edges and the adapters.',
      from: { path: '^src/domain/' },
      to: {
        dependencyTypes: ['npm', 'npm-dev', 'npm-optional', 'npm-peer', 'npm-no-pkg', 'npm-unknown'],
        path: 'node_modules/(fastify|@fastify/|@oclif/|amqplib|amqp-connection-manager|stripe|@sendgrid/|@aws-sdk/|ioredis|redis|opossum|cli-table3|pino)',
      },
    },
    {
      name: 'domain-imports-no-database-driver',
      severity: 'error',
      comment:
        'The domain reaches PostgreSQL through MikroORM, not the driver. Known exception: domain/shared/sql.ts finds the pg pool under MikroORM for the hot reads (README, Benchmarks); it should move behind the Sql port into an adapter.',
      from: { path: '^src/domain/', pathNot: '^src/domain/shared/sql\\.ts$' },
      to: { path: 'node_modules/(pg|pg-pool|@electric-sql/|@mikro-orm/(postgresql|pglite))/' },
    },
    {
      name: 'server-does-not-import-worker',
      severity: 'error',
      comment: 'svc serve and svc worker boot from the same config and services (src/app.ts) and never from each other.',
      from: { path: '^src/server/' },
      to: { path: '^src/worker/' },
    },
    {
      name: 'worker-does-not-import-server',
      severity: 'error',
      comment: 'The worker has no HTTP: it boots from src/app.ts, never from src/server.',
      from: { path: '^src/worker/' },
      to: { path: '^src/server/' },
    },
    {
      name: 'lower-layers-do-not-import-edges',
      severity: 'error',
      comment: 'The composition root, the domain and the adapters are used by the edges (commands, server, worker), never the other way round.',
      from: { path: '^src/(domain|adapters)/|^src/(app|config|logger|paths)\\.ts$' },
      to: { path: '^src/(server|commands|cli|worker)/|^src/commands\\.ts$' },
    },
    {
      name: 'only-the-composition-root-wires-adapters',
      severity: 'error',
      comment:
        'createApp (src/app.ts) builds the adapters; everything else gets them from the App. Type-only imports wire nothing and are allowed ' +
        '(the App exposes an adapter, its result types come with it). Allowed by name: svc keys generate writes the key file an App on ' +
        'PostgreSQL needs before one can exist; src/server/errors.ts, src/cli/base-command.ts and src/worker/consumer.ts (the error edges ' +
        'of the API, the CLI and the consumers) call translateDatabaseError, the one place DESIGN.md gives the PostgreSQL error codes.',
      from: {
        path: '^src/',
        pathNot: '^src/(app\\.ts|adapters/|commands/keys/generate\\.ts|server/errors\\.ts|cli/base-command\\.ts|worker/consumer\\.ts)',
      },
      to: { path: '^src/adapters/', dependencyTypesNot: ['type-only'] },
    },
    {
      name: 'named-exceptions-stay-narrow',
      severity: 'error',
      comment: 'The edges allowed above reach only the adapter they are named for.',
      from: { path: '^src/(server/errors|cli/base-command|worker/consumer)\\.ts$' },
      to: { path: '^src/adapters/', pathNot: '^src/adapters/database\\.ts$', dependencyTypesNot: ['type-only'] },
    },
    {
      name: 'keys-generate-reaches-only-jwt',
      severity: 'error',
      comment: 'svc keys generate may use the key generator and nothing else of the adapters.',
      from: { path: '^src/commands/keys/generate\\.ts$' },
      to: { path: '^src/adapters/', pathNot: '^src/adapters/jwt\\.ts$', dependencyTypesNot: ['type-only'] },
    },
    {
      name: 'not-to-unresolvable',
      severity: 'error',
      comment: 'An import that resolves to nothing.',
      from: {},
      to: { couldNotResolve: true },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    // .js specifiers in TypeScript sources resolve to the .ts files (NodeNext).
    tsConfig: { fileName: 'tsconfig.json' },
    tsPreCompilationDeps: true,
    enhancedResolveOptions: {
      exportsFields: ['exports'],
      conditionNames: ['import', 'require', 'node', 'default', 'types'],
      mainFields: ['module', 'main', 'types'],
    },
    skipAnalysisNotInRules: true,
  },
};
