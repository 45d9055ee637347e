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

// Stock desk. Forms marked data-queue are sent by this script, so a lost link loses nothing: a
// form that could not be sent stays filled in, says so, and waits in this browser (localStorage)
// until the link returns. Each form carries its request_id, so sending it again never acts twice
// and a timed-out form that did arrive answers with its first result. A queued form is sent only
// from a page of the same signed-in person, is dropped unsent once older than a session lives
// (12 hours), and is cleared when that person signs out. Without the script the forms post as usual.
(function () {
  'use strict';
  var KEY = 'vxt-queue';
  var WHO = 'vxt-who';
  var MAX_AGE = 12 * 3600 * 1000;
  var busy = false;

  function fresh(x) { var age = Date.now() - (x && x.at); return age >= 0 && age < MAX_AGE; }
  function save(q) { try { localStorage.setItem(KEY, JSON.stringify(q)); return true; } catch (e) { return false; } }
  // The queue without forms gone stale: those are dropped here, never sent.
  function load() {
    var q;
    try { q = JSON.parse(localStorage.getItem(KEY) || '[]'); } catch (e) { q = []; }
    if (!Array.isArray(q)) { q = []; }
    var kept = q.filter(fresh);
    if (kept.length !== q.length) { save(kept); }
    return kept;
  }
  function rid(body) { return new URLSearchParams(body).get('request_id') || ''; }

  function note(text, bad) {
    var main = document.getElementById('main');
    if (!main) { return; }
    var p = document.getElementById('queue-note');
    if (!p) {
      p = document.createElement('p');
      p.id = 'queue-note';
      p.setAttribute('role', 'status');
      var h1 = main.querySelector('h1');
      main.insertBefore(p, h1 ? h1.nextSibling : main.firstChild);
    }
    p.className = 'notice ' + (bad ? 'error' : 'ok');
    p.textContent = text;
  }

  function post(action, body) {
    var ctl = window.AbortController ? new AbortController() : null;
    var timer = setTimeout(function () { if (ctl) { ctl.abort(); } }, 30000);
    return fetch(action, {
      method: 'POST', body: body, credentials: 'same-origin', signal: ctl ? ctl.signal : undefined,
      headers: { 'Content-Type': 'application/x-www-form-urlencoded', 'Accept': 'text/html' }
    }).then(function (res) { clearTimeout(timer); return res; }, function (e) { clearTimeout(timer); throw e; });
  }

  function signedOut(res) { return res.status === 401 || res.url.indexOf('/signin') >= 0; }
  function who() { var w = document.querySelector('[data-who]'); return w ? w.getAttribute('data-who') : ''; }
  // One of our pages (a result, or a form with the reason), not a proxy's or a plain-text refusal.
  function ours(res, doc) {
    var type = res.headers.get('Content-Type') || '';
    return type.indexOf('text/html') >= 0 && !!doc && !!doc.getElementById('main');
  }
  function parse(html) { return new DOMParser().parseFromString(html, 'text/html'); }
  function mine() { var me = who(); return load().filter(function (x) { return me && x.who === me; }); }

  // Sends the forms waiting in this browser, oldest first, with this page's anti-forgery value
  // (the session may have been renewed since the form was filled in).
  function flush() {
    var q = mine();
    var csrf = document.querySelector('input[name=csrf]');
    if (busy || !q.length || !csrf || !window.fetch) { return; }
    busy = true;
    var item = q[0];
    var body = new URLSearchParams(item.body);
    body.set('csrf', csrf.value);
    post(item.action, body.toString()).then(function (res) {
      if (signedOut(res)) { note(item.signin, true); busy = false; return; }
      return res.text().then(function (html) {
        var doc = parse(html);
        // Settled only by an answer of ours: done (2xx) or refused for good (4xx). A 5xx (a proxy
        // while the app restarts), or a plain-text refusal, leaves it waiting for the next try.
        var settled = ours(res, doc) && (res.ok || (res.status >= 400 && res.status < 500));
        if (!settled) {
          var plain = (res.headers.get('Content-Type') || '').indexOf('text/plain') >= 0;
          note(item.title + ' — ' + ((plain && html.trim().slice(0, 300)) || res.status), true);
          busy = false;
          return;
        }
        save(load().filter(function (x) { return rid(x.body) !== rid(item.body); }));
        var out = doc.querySelector('#form-error, .notice');
        note(item.sent + ' ' + item.title + ' — ' + (out ? out.textContent : res.status), !res.ok);
        busy = false;
        flush();
      });
    }).catch(function () { busy = false; });
  }

  document.addEventListener('submit', function (ev) {
    var form = ev.target;
    // Signing out takes this person's waiting forms with it: they are not sent in a later session.
    if (form.getAttribute && form.getAttribute('action') === '/signout') {
      var me = who();
      if (!me) { try { me = sessionStorage.getItem(WHO) || ''; } catch (e) { me = ''; } }
      if (me) { save(load().filter(function (x) { return x.who !== me; })); }
      return;
    }
    if (!form.hasAttribute('data-queue') || !window.fetch || !window.URLSearchParams || !window.FormData) { return; }
    ev.preventDefault();
    var body = new URLSearchParams(new FormData(form));
    if (ev.submitter && ev.submitter.name) { body.append(ev.submitter.name, ev.submitter.value); }
    var buttons = form.querySelectorAll('button');
    var i;
    for (i = 0; i < buttons.length; i++) { buttons[i].disabled = true; }
    var done = function () { for (i = 0; i < buttons.length; i++) { buttons[i].disabled = false; } };
    post(form.action, body.toString()).then(function (res) {
      if (signedOut(res)) { throw new Error('signed out'); }
      return res.text().then(function (html) {
        var doc = parse(html);
        // A 5xx (a proxy while the app restarts), a 403 (this page's anti-forgery value has gone
        // stale) or an answer that is not a page of ours: keep the form, as when the link is down.
        if (res.status === 403) { throw new Error('stale'); }
        if (res.status >= 500 || !ours(res, doc)) { throw new Error('server'); }
        // The answer is the result page (or the form again with the reason): show it in place,
        // so this script and its listeners stay as they are.
        document.title = doc.title;
        document.body.replaceWith(doc.body);
        window.scrollTo(0, 0);
        var first = document.querySelector('#main .notice, #main h1');
        if (first) { first.setAttribute('tabindex', '-1'); first.focus(); }
      });
    }).catch(function (e) {
      done();
      var q = load().filter(function (x) { return rid(x.body) !== rid(body.toString()); });
      q.push({ action: form.action, body: body.toString(), title: document.title, at: Date.now(), who: who(),
        sent: form.getAttribute('data-sent') || '', signin: form.getAttribute('data-signin') || '' });
      save(q);
      var why = { 'signed out': 'data-signin', server: 'data-server', stale: 'data-stale' }[e && e.message];
      var out = form.getAttribute(why || 'data-offline') || form.getAttribute('data-offline');
      note(out || 'Not sent.', true);
    });
  });

  // A barcode scanner types the code and then Enter: that Enter must not send a half-filled
  // form. It moves to the next field, or finds the scanned lot's line in a shipment.
  document.addEventListener('keydown', function (ev) {
    var input = ev.target;
    if (ev.key !== 'Enter' || !input.hasAttribute || !input.hasAttribute('data-scan')) { return; }
    ev.preventDefault();
    var code = input.value;
    if (input.hasAttribute('data-scan-find')) {
      var lines = document.querySelectorAll('fieldset[data-lot]');
      var hit = null;
      for (var i = 0; i < lines.length; i++) {
        var lot = lines[i].getAttribute('data-lot');
        var gtins = (lines[i].getAttribute('data-gtins') || '').split(' ');
        var gtinOk = gtins.length === 0 || gtins[0] === '' || gtins.some(function (g) { return code.indexOf(g) >= 0; });
        lines[i].classList.remove('found');
        if (!hit && lot && gtinOk && code.indexOf(lot) >= 0) { hit = lines[i]; }
      }
      if (hit) {
        hit.classList.add('found');
        hit.scrollIntoView({ block: 'center' });
        var first = hit.querySelector('input[type=number]');
        if (first) { first.focus(); first.select(); }
        input.value = '';
      } else {
        note(input.getAttribute('data-notfound') || '', true);
      }
      return;
    }
    var fields = Array.prototype.slice.call(input.form ? input.form.elements : []);
    var next = fields[fields.indexOf(input) + 1];
    if (next && next.focus) { next.focus(); }
  });

  if (who()) { try { sessionStorage.setItem(WHO, who()); } catch (e) { /* private mode */ } }
  if (mine().length) { flush(); }
  window.addEventListener('online', flush);
  setInterval(flush, 20000);
})();
