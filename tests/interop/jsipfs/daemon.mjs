// js-ipfs 0.66's own daemon (ipfs-daemon: the core, the RPC API and the gateway, as `jsipfs
// daemon` runs them) with its network layer never started: an offline node, for artkeep's tests.
//
// usage: node --require=./with-resolvers.cjs daemon.mjs REPO CONFIG.json
// A new REPO is made empty (no help files) with CONFIG merged over js-ipfs's defaults.
// `jsipfs daemon --offline` is not offline in 0.66: the flag only reaches IPNS, libp2p starts,
// and a block the node lacks is wanted from peers forever. Here libp2p and bitswap never start,
// so nothing can be dialled, and a missing block is an error at once, as in `ipfs --offline`.
// Prints one JSON line once both servers listen:
//   {"api": "http://127.0.0.1:PORT", "gateway": "http://127.0.0.1:PORT", "version": "0.66.1"}
// then serves until SIGTERM or SIGINT, on which it stops cleanly and exits 0. Errors: stderr, exit 2.

import { readFileSync } from 'node:fs'
import { Daemon } from 'ipfs-daemon'

const IPFS_VERSION = JSON.parse(
  readFileSync(new URL('./node_modules/ipfs/package.json', import.meta.url), 'utf8')
).version

function onlyUri (servers, what) {
  if (servers.length !== 1) {
    throw new Error(`expected one ${what} server, js-ipfs started ${servers.length}`)
  }
  return servers[0].info.uri // a Hapi server: http://127.0.0.1:PORT
}

async function main () {
  const [repo, configPath] = process.argv.slice(2)
  if (repo === undefined || configPath === undefined) {
    throw new Error('usage: daemon.mjs REPO CONFIG.json')
  }
  const daemon = new Daemon({
    repo,
    config: JSON.parse(readFileSync(configPath, 'utf8')),
    init: { emptyRepo: true },
    start: false, // libp2p and bitswap stay off
    preload: { enabled: false },
    silent: true
  })
  await daemon.start()
  const stop = async () => {
    await daemon.stop()
    process.exit(0)
  }
  process.on('SIGTERM', stop)
  process.on('SIGINT', stop)
  // The same fields `jsipfs daemon` reads to print where it listens.
  process.stdout.write(JSON.stringify({
    api: onlyUri(daemon._httpApi._apiServers, 'API'),
    gateway: onlyUri(daemon._httpGateway._gatewayServers, 'gateway'),
    version: IPFS_VERSION
  }) + '\n')
}

main().catch((error) => {
  process.stderr.write(`jsipfs daemon: ${error.stack}\n`)
  process.exit(2)
})
