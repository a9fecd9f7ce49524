// Promise.withResolvers arrived in Node 22; mortice and it-queue, deep in the trees of js-ipfs
// 0.66 and of @helia/verified-fetch, call it. Loaded before js-ipfs with NODE_OPTIONS=--require
// (tests/interop/jsipfs.py), and imported first by tests/interop/js/verified_fetch.mjs.
Promise.withResolvers ??= function withResolvers () {
  let resolve, reject
  const promise = new this((res, rej) => { resolve = res; reject = rej })
  return { promise, resolve, reject }
}
