// Reads ipfs:// URLs through npm @helia/verified-fetch with our gateway as its only source.
//
// Request (JSON on stdin):
//   {"gateway": "http://127.0.0.1:PORT",
//    "fetches": [{"resource": "ipfs://CID[/path]", "accept": "application/vnd.ipld.raw" | null,
//                 "out": "/abs/path/for/the/body"}, ...]}
// verified-fetch gets the gateway and no delegated routers, so it runs a Helia node over HTTP
// only (no libp2p); it fetches each block from the gateway and checks it against its CID.
// Every fetch() it makes goes through a guard that refuses anything but the given gateway and
// records the URL.
// Answer (stdout): one JSON line {"client": "@helia/verified-fetch@<version>",
//   "responses": [{"resource", "status", "content_type", "bytes"}, ...], "requested": [URL, ...]}.
// Errors: stderr, exit code 2.

import { readFileSync, writeFileSync } from 'node:fs'
// Helia's locks (mortice, it-queue) call Promise.withResolvers, which Node 20 lacks.
import '../jsipfs/with-resolvers.cjs'

const CLIENT_VERSION = JSON.parse(
  readFileSync(new URL('./node_modules/@helia/verified-fetch/package.json', import.meta.url), 'utf8')
).version

class RequestError extends Error {}

function guardFetch (gateway) {
  const origin = new URL(gateway)
  if (origin.protocol !== 'http:' || origin.hostname !== '127.0.0.1') {
    throw new RequestError(`refusing gateway ${gateway}: only http://127.0.0.1 is allowed`)
  }
  const requested = []
  const realFetch = globalThis.fetch
  globalThis.fetch = async (resource, init) => {
    const url = new URL(resource instanceof Request ? resource.url : resource.toString())
    requested.push(url.toString())
    if (url.origin !== origin.origin) {
      throw new RequestError(`verified-fetch tried to reach ${url}, which is not the gateway ${origin.origin}`)
    }
    return realFetch(resource, init)
  }
  return requested
}

async function main () {
  const request = JSON.parse(readFileSync(0, 'utf8'))
  const requested = guardFetch(request.gateway)
  // Imported only now, so that nothing in it can hold the unguarded fetch.
  const { createVerifiedFetch } = await import('@helia/verified-fetch')
  const verifiedFetch = await createVerifiedFetch({
    gateways: [request.gateway],
    routers: [],
    allowInsecure: true, // plain http
    allowLocal: true // 127.0.0.1
  })
  const responses = []
  try {
    for (const { resource, accept, out } of request.fetches) {
      const headers = accept == null ? {} : { Accept: accept }
      const response = await verifiedFetch(resource, { headers, signal: AbortSignal.timeout(60_000) })
      const body = new Uint8Array(await response.arrayBuffer())
      writeFileSync(out, body)
      responses.push({
        resource,
        status: response.status,
        content_type: response.headers.get('content-type'),
        bytes: body.length
      })
    }
  } finally {
    await verifiedFetch.stop()
  }
  process.stdout.write(JSON.stringify({
    client: `@helia/verified-fetch@${CLIENT_VERSION}`, responses, requested
  }) + '\n')
}

main().catch((error) => {
  process.stderr.write(`verified_fetch: ${error instanceof RequestError ? error.message : error.stack}\n`)
  process.exitCode = 2
})
