// UnixFS CIDs from the JS importer (npm ipfs-unixfs-importer), an oracle for artkeep's interop tests.
//
// Request (JSON on stdin):
//   {"profile": {"name": "unixfs-v1-2025", "cid_version": 1, "raw_leaves": true,
//                "chunk_size": 1048576, "file_max_links": 1024, "hamt_fanout": 256,
//                "hamt_threshold": 262144, "hamt_size_estimation": "block-bytes"},
//    "builtin_profile": false,
//    "items": [{"path": "/abs/path", "kind": "file" | "dir", "wrap": false}, ...]}
// Answer (stdout): one JSON line per item, in order, {"path": ..., "cid": ...},
// then {"importer": "ipfs-unixfs-importer@<version>"}. Errors: stderr, exit code 2.
//
// Folders are read as `ipfs add -r` reads them: hidden entries (names starting
// with a dot) are left out, empty folders kept, symlinks stored as symlinks.
// With "builtin_profile": true the importer's own IPIP-499 profile of that name
// is used instead of the knobs, to check that our knobs say the same thing.
// Blocks are hashed and dropped: nothing is stored, nothing leaves the process.

import { createReadStream, readFileSync } from 'node:fs'
import { lstat, readFile, readdir, readlink } from 'node:fs/promises'
import { basename } from 'node:path'
import { importer } from 'ipfs-unixfs-importer'
import { fixedSize } from 'ipfs-unixfs-importer/chunker'
import { balanced } from 'ipfs-unixfs-importer/layout'

const IMPORTER_VERSION = JSON.parse(
  readFileSync(new URL('./node_modules/ipfs-unixfs-importer/package.json', import.meta.url), 'utf8')
).version
const BUILTIN_PROFILES = new Set(['unixfs-v0-2015', 'unixfs-v1-2025'])
// The root folder's own name never reaches its CID; any fixed name will do.
const ROOT = 'root'

class RequestError extends Error {}

// A blockstore that keeps nothing: the CID is all we want.
const discard = { put: async (cid) => cid }

function importerOptions (profile, builtin, wrap) {
  if (builtin) {
    if (!BUILTIN_PROFILES.has(profile.name)) {
      throw new RequestError(`the importer has no built-in profile ${JSON.stringify(profile.name)}`)
    }
    return { profile: profile.name, wrapWithDirectory: wrap }
  }
  const fanoutBits = Math.log2(profile.hamt_fanout)
  if (!Number.isInteger(fanoutBits)) {
    throw new RequestError(`HAMT fanout must be a power of two, got ${profile.hamt_fanout}`)
  }
  return {
    cidVersion: profile.cid_version,
    rawLeaves: profile.raw_leaves,
    leafType: 'file',
    reduceSingleLeafToSelf: true,
    chunker: fixedSize({ chunkSize: profile.chunk_size }),
    layout: balanced({ maxChildrenPerNode: profile.file_max_links }),
    shardSplitThresholdBytes: profile.hamt_threshold,
    shardSplitStrategy: profile.hamt_size_estimation,
    shardFanoutBits: fanoutBits,
    fieldOrder: 'links-first',
    wrapWithDirectory: wrap
  }
}

const isHidden = (name) => name.startsWith('.')
const READ_SIZE = 1 << 20

// A file's bytes, read only when the importer gets to it: thousands of tiny
// files must not mean thousands of open streams with 1 MiB buffers each.
async function * fileContent (path) {
  const { size } = await lstat(path)
  if (size <= READ_SIZE) {
    yield await readFile(path)
  } else {
    yield * createReadStream(path, { highWaterMark: READ_SIZE })
  }
}

// Import candidates for a folder, as `ipfs add -r` sees it.
async function * folderCandidates (folder, prefix) {
  const entries = (await readdir(folder, { withFileTypes: true }))
    .filter((entry) => !isHidden(entry.name))
    .sort((a, b) => Buffer.compare(Buffer.from(a.name), Buffer.from(b.name)))
  if (entries.length === 0) {
    yield { path: prefix }
    return
  }
  for (const entry of entries) {
    const path = `${folder}/${entry.name}`
    const name = `${prefix}/${entry.name}`
    if (entry.isSymbolicLink()) {
      yield { path: name, link: await readlink(path) }
    } else if (entry.isDirectory()) {
      yield * folderCandidates(path, name)
    } else if (entry.isFile()) {
      yield { path: name, content: fileContent(path) }
    } else {
      throw new RequestError(`${path} is neither a file, a folder nor a symlink`)
    }
  }
}

async function rootCid (item, profile, builtin) {
  const kind = item.kind ?? 'file'
  const wrap = Boolean(item.wrap)
  const stat = await lstat(item.path)
  let candidates
  if (kind === 'file' && stat.isFile()) {
    const content = fileContent(item.path)
    candidates = [wrap ? { path: basename(item.path), content } : { content }]
  } else if (kind === 'dir' && stat.isDirectory()) {
    candidates = folderCandidates(item.path, wrap ? basename(item.path) : ROOT)
  } else {
    throw new RequestError(`${item.path} is not a ${kind}`)
  }
  let last
  for await (const entry of importer(candidates, discard, importerOptions(profile, builtin, wrap))) {
    last = entry
  }
  if (last === undefined) {
    throw new RequestError(`the importer produced nothing for ${item.path}`)
  }
  return last.cid.toString()
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
  for (const item of request.items) {
    const cid = await rootCid(item, request.profile, Boolean(request.builtin_profile))
    process.stdout.write(JSON.stringify({ path: item.path, cid }) + '\n')
  }
  process.stdout.write(JSON.stringify({ importer: `ipfs-unixfs-importer@${IMPORTER_VERSION}` }) + '\n')
}

main().catch((error) => {
  process.stderr.write(`unixfs_cid: ${error instanceof RequestError ? error.message : error.stack}\n`)
  process.exitCode = 2
})
