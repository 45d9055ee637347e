// vaxtrace pages: the one script. Everything works without it; it adds live alert updates.
(function () {
  'use strict';

  // Live alerts: the server sends each alert change as a rendered table row. EventSource
  // reconnects by itself and sends Last-Event-ID, so the server resumes where it stopped.
  var table = document.querySelector('table[data-live]');
  if (table && window.EventSource) {
    var status = document.getElementById('live-status');
    var announce = document.getElementById('live-announce');
    var src = new EventSource(table.getAttribute('data-live'));
    src.addEventListener('open', function () {
      if (status) { status.textContent = status.getAttribute('data-ok'); status.classList.remove('error'); }
    });
    src.addEventListener('error', function () {
      if (status) { status.textContent = status.getAttribute('data-lost'); status.classList.add('error'); }
    });
    src.addEventListener('alert', function (e) {
      var m;
      try { m = JSON.parse(e.data); } catch (err) { return; }
      var holder = document.createElement('tbody');
      holder.innerHTML = m.html;
      var row = holder.firstElementChild;
      if (!row) { return; }
      row.classList.add('new');
      var old = document.getElementById('alert-' + m.id);
      var body = table.tBodies[0];
      if (old) {
        old.parentNode.replaceChild(row, old);
      } else {
        body.insertBefore(row, body.firstChild);
      }
      var empty = document.getElementById('no-alerts');
      if (empty) { empty.parentNode.removeChild(empty); }
      if (m.opened && announce) { announce.textContent = m.label; }
    });
  }
})();
