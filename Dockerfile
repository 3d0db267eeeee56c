# protoprune: one image, embedded database by default, native Postgres via DATABASE_URL.
FROM node:20-bookworm-slim AS build
WORKDIR /app
ENV ONNXRUNTIME_NODE_INSTALL=skip
COPY package.json package-lock.json .npmrc ./
COPY scripts ./scripts
COPY prisma ./prisma
COPY prisma.config.ts ./
RUN npm ci
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
COPY clients/typescript ./clients/typescript
COPY proto ./proto
RUN npm run build && npm prune --omit=dev

FROM node:20-bookworm-slim
# tini as PID 1 forwards signals and reaps zombies. node as PID 1 would ignore SIGTERM/SIGINT until
# its handlers are installed (the kernel applies no default action to PID 1), e.g. during boot.
# The data-directory lock does not depend on it: it also copes with node being PID 1 (docker run --init is equivalent).
RUN apt-get update && apt-get install -y --no-install-recommends tini && rm -rf /var/lib/apt/lists/*
WORKDIR /app
ENV NODE_ENV=production DATA_DIR=/data MODELS_DIR=/data/models
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY --from=build /app/package.json ./
# The CLI: `npx protoprune …` in /app (bin/protoprune.mjs runs the build under dist/). npx links
# /app into its cache as a package, which would run the package's postinstall (prisma generate, a
# build step whose tools are pruned here): npm runs no scripts in this image.
COPY bin ./bin
ENV NPM_CONFIG_IGNORE_SCRIPTS=true
COPY prisma ./prisma
COPY proto ./proto
# The dashboard's static files (HTML, CSS, hand-written JS) are served from src/dashboard.
COPY src/dashboard ./src/dashboard
RUN mkdir -p /data && chown node:node /data
USER node
VOLUME ["/data"]
EXPOSE 8080 50051
HEALTHCHECK --interval=15s --timeout=3s CMD node -e "fetch('http://127.0.0.1:'+(process.env.PORT||8080)+'/readyz').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["node", "dist/src/main.js"]
