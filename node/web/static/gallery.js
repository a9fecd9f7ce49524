// artkeep gallery: small enhancements over pages that work without JavaScript.
// Copy buttons, infinite scroll on the gallery, and upload progress on the import page.
"use strict";

function announce(message) {
  const region = document.getElementById("announce");
  if (region) {
    region.textContent = "";
    window.setTimeout(() => { region.textContent = message; }, 50);
  }
}

// --- copy to clipboard: the Clipboard API where the page is a secure context, else a hidden textarea

async function copyText(text) {
  if (navigator.clipboard && window.isSecureContext) {
    await navigator.clipboard.writeText(text);
    return;
  }
  const area = document.createElement("textarea");
  area.value = text;
  area.setAttribute("readonly", "");
  area.style.position = "fixed";
  area.style.opacity = "0";
  document.body.appendChild(area);
  area.select();
  const copied = document.execCommand("copy");
  area.remove();
  if (!copied) {
    throw new Error("copy refused");
  }
}

function setUpCopyButtons() {
  for (const button of document.querySelectorAll("button[data-copy]")) {
    const source = document.getElementById(button.dataset.copy);
    if (!source) {
      continue;
    }
    const label = button.textContent;
    button.hidden = false;
    button.addEventListener("click", async () => {
      try {
        await copyText(source.textContent);
        button.textContent = "Copied";
        announce(label.replace(/^Copy/, "Copied"));
      } catch (error) {
        button.textContent = "Copy failed: select the text";
        announce("Copying failed; select the text and copy it by hand");
      }
      window.setTimeout(() => { button.textContent = label; }, 2000);
    });
  }
}

// --- infinite scroll: fetch the next page's cards when the "Older works" link comes into view

function setUpInfiniteScroll() {
  const grid = document.getElementById("grid");
  if (!grid || !("IntersectionObserver" in window) || !location.protocol.startsWith("http")) {
    return;  // the link keeps working; pages opened from disk cannot fetch each other
  }
  let loading = false;
  const observer = new IntersectionObserver(async (entries) => {
    const link = document.getElementById("next-page");
    if (loading || !link || !entries.some((entry) => entry.isIntersecting)) {
      return;
    }
    loading = true;
    try {
      const response = await fetch(link.href, { credentials: "same-origin", headers: { Accept: "text/html" } });
      if (!response.ok) {
        throw new Error(`HTTP ${response.status}`);
      }
      const page = new DOMParser().parseFromString(await response.text(), "text/html");
      const cards = page.querySelectorAll("#grid > li");
      grid.append(...Array.from(cards, (card) => document.adoptNode(card)));
      const next = page.getElementById("next-page");
      if (next) {
        link.href = next.href;
        observer.unobserve(link);
        observer.observe(link);
      } else {
        link.remove();
        observer.disconnect();
      }
      announce(`${cards.length} more works loaded`);
    } catch (error) {
      observer.disconnect();  // leave the plain link to click
    } finally {
      loading = false;
    }
  }, { rootMargin: "600px" });
  const link = document.getElementById("next-page");
  if (link) {
    observer.observe(link);
  }
}

// --- import: send the form with XMLHttpRequest to show upload progress, then show the report

function setUpImport() {
  const form = document.getElementById("import-form");
  if (!form) {
    return;
  }
  const bar = document.getElementById("upload-progress");
  const status = document.getElementById("upload-status");
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const request = new XMLHttpRequest();
    request.open("POST", form.action);
    request.setRequestHeader("Accept", "text/html");
    bar.hidden = false;
    bar.value = 0;
    status.textContent = "Uploading…";
    request.upload.addEventListener("progress", (progress) => {
      if (progress.lengthComputable) {
        const percent = Math.round((100 * progress.loaded) / progress.total);
        bar.value = percent;
        bar.textContent = `${percent}%`;
        status.textContent = percent < 100 ? `Uploading… ${percent}%` : "Uploaded; storing and signing works…";
      }
    });
    request.addEventListener("load", () => {
      const page = new DOMParser().parseFromString(request.responseText, "text/html");
      const main = page.getElementById("main");
      if (main) {
        const nodes = Array.from(main.childNodes);  // a copy: adopting a node takes it out of the live list
        document.getElementById("main").replaceChildren(...nodes.map((node) => document.adoptNode(node)));
        setUpImport();
        setUpCopyButtons();
        const report = document.getElementById("report-summary");
        announce(report ? report.textContent : "Import finished");
      } else {
        status.textContent = `Import failed (HTTP ${request.status})`;
      }
    });
    request.addEventListener("error", () => {
      status.textContent = "The upload failed: the connection was lost.";
    });
    request.send(new FormData(form));
  });
}

// --- search: leave empty filters out of the URL, so a search reads as what was asked

function setUpSearch() {
  const form = document.querySelector("form.search");
  if (!form) {
    return;
  }
  form.addEventListener("submit", () => {
    for (const field of form.querySelectorAll("input, select")) {
      if (!field.value) {
        field.disabled = true;  // disabled fields are not sent; the next page load starts afresh
      }
    }
  });
}

document.addEventListener("DOMContentLoaded", () => {
  setUpSearch();
  setUpCopyButtons();
  setUpInfiniteScroll();
  setUpImport();
});
