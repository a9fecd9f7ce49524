// A trustless-gateway client built from the JS IPFS libraries, for artkeep's interop tests.
//
// Request (JSON on stdin):
//   {"url": "http://127.0.0.1:PORT/ipfs/CID?format=car", "root": "CID", "out": "/abs/path/of/file",
//    "offset": 0, "length": null}
// It fetches the CAR (only from 127.0.0.1), checks every block's hash against its CID with
// multiformats, parses the CAR with @ipld/car, then rebuilds the file under `root` with
// ipfs-unixfs-exporter from those blocks alone (optionally just `length` bytes from `offset`)
// and writes it to `out`.
// Answer (stdout): one JSON line {"blocks": N, "roots": [...], "content_type": "...", "bytes": N,
// "exporter": "ipfs-unixfs-exporter@<version>"}. Errors: stderr, exit code 2.

import { readFileSync, writeFileSync } from 'node:fs'
import { CarReader } from '@ipld/car'
import { exporter } from 'ipfs-unixfs-exporter'
import { identity } from 'multiformats/hashes/identity'
import { sha256 } from 'multiformats/hashes/sha2'
import { equals } from 'multiformats/bytes'

const EXPORTER_VERSION = JSON.parse(
  readFileSync(new URL('./node_modules/ipfs-unixfs-exporter/package.json', import.meta.url), 'utf8')
).version
const HASHERS = new Map([[sha256.code, sha256], [identity.code, identity]])

class RequestError extends Error {}

function loopbackOnly (url) {
  const parsed = new URL(url)
  if (parsed.protocol !== 'http:' || parsed.hostname !== '127.0.0.1') {
    throw new RequestError(`refusing to fetch ${url}: only http://127.0.0.1 is allowed`)
  }
}

async function verifiedBlocks (bytes) {
  const reader = await CarReader.fromBytes(bytes)
  const blocks = new Map()
  let count = 0
  for await (const { cid, bytes: block } of reader.blocks()) {
    const hasher = HASHERS.get(cid.multihash.code)
    if (hasher === undefined) {
      throw new RequestError(`block ${cid} uses an unknown hash 0x${cid.multihash.code.toString(16)}`)
    }
    const digest = await hasher.digest(block)
    if (!equals(digest.bytes, cid.multihash.bytes)) {
      throw new RequestError(`block ${cid} does not match its CID`)
    }
    blocks.set(cid.toV1().toString(), block)
    count += 1
  }
  return { roots: (await reader.getRoots()).map((root) => root.toString()), blocks, count }
}

async function readStdin () {
  const chunks = []
  for await (const chunk of process.stdin) {
    chunks.push(chunk)
  }
  return JSON.parse(Buffer.concat(chunks).toString('utf8'))
}

async function main () {
  const request = await readStdin()
  loopbackOnly(request.url)
  const response = await fetch(request.url, { headers: { Accept: 'application/vnd.ipld.car' } })
  if (response.status !== 200) {
    throw new RequestError(`${request.url}: HTTP ${response.status}`)
  }
  const { roots, blocks, count } = await verifiedBlocks(new Uint8Array(await response.arrayBuffer()))
  const blockstore = {
    async * get (cid) {
      const block = blocks.get(cid.toV1().toString())
      if (block === undefined) {
        throw new RequestError(`the CAR lacks block ${cid}`)
      }
      yield block
    }
  }
  const entry = await exporter(request.root, blockstore)  // a CID, or CID/path/to/file
  const options = {}
  if (request.offset != null) options.offset = request.offset
  if (request.length != null) options.length = request.length
  const parts = []
  for await (const part of entry.content(options)) {
    parts.push(part)
  }
  const content = Buffer.concat(parts)
  writeFileSync(request.out, content)
  process.stdout.write(JSON.stringify({
    blocks: count,
    roots,
    content_type: response.headers.get('content-type'),
    bytes: content.length,
    exporter: `ipfs-unixfs-exporter@${EXPORTER_VERSION}`
  }) + '\n')
}

main().catch((error) => {
  process.stderr.write(`gateway_car: ${error instanceof RequestError ? error.message : error.stack}\n`)
  process.exitCode = 2
})
