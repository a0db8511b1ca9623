// Refreshes the queue table every 15 s by swapping in its rows from /console/queue/rows
// (same filters and page). Reading works without it: the page has a Refresh link.
"use strict";
(function () {
  const table = document.getElementById("queue");
  if (!table) return;
  const url = table.dataset.rowsUrl;
  async function refresh() {
    try {
      const response = await fetch(url, { credentials: "same-origin" });
      if (!response.ok) return; // a signed-out session: the next full load says so
      const html = await response.text();
      const doc = new DOMParser().parseFromString("<table>" + html + "</table>", "text/html");
      const rows = doc.getElementById("queue-rows");
      const current = document.getElementById("queue-rows");
      if (rows && current) current.replaceWith(document.importNode(rows, true));
    } catch (e) {
      // Offline for a moment: keep what is shown, try again next time.
    }
  }
  setInterval(refresh, 15000);
})();
