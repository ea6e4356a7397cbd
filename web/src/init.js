// Boots GraphiQL for the hivegraph gateway. Loaded from /graphiql/assets/ after the
// React, ReactDOM and GraphiQL UMD bundles; configuration comes from data-* attributes
// of #graphiql so that the page needs no inline script (CSP: script-src 'self').
(function () {
  'use strict';

  var container = document.getElementById('graphiql');

  function showError(message) {
    container.textContent = '';
    var p = document.createElement('p');
    p.className = 'hivegraph-status hivegraph-error';
    p.textContent = 'GraphiQL could not start: ' + message;
    container.appendChild(p);
  }

  // HTTP endpoint: an absolute URL or a path, resolved against the page's URL.
  function httpUrl(endpoint) {
    return new URL(endpoint || '/graphql', window.location.href).href;
  }

  // WebSocket endpoint: ws:/wss: (following the page's http:/https:) on location.host,
  // unless the endpoint is already an absolute URL.
  function wsUrl(endpoint) {
    endpoint = endpoint || '/graphql';
    if (/^wss?:\/\//i.test(endpoint)) return endpoint;
    if (/^https?:\/\//i.test(endpoint)) return endpoint.replace(/^http/i, 'ws');
    var path = new URL(endpoint, window.location.href);
    var scheme = window.location.protocol === 'https:' ? 'wss:' : 'ws:';
    return scheme + '//' + window.location.host + path.pathname + path.search;
  }

  try {
    if (typeof window.React === 'undefined' || typeof window.ReactDOM === 'undefined') {
      throw new Error('React assets did not load.');
    }
    if (typeof window.GraphiQL === 'undefined') {
      throw new Error('GraphiQL assets did not load.');
    }

    var url = httpUrl(container.dataset.endpoint);
    var subscriptionUrl = wsUrl(container.dataset.subscriptionEndpoint);

    var fetcher = window.GraphiQL.createFetcher({
      url: url,
      subscriptionUrl: subscriptionUrl,
      headers: { 'content-type': 'application/json' },
      enableIncrementalDelivery: false,
    });

    var root = window.ReactDOM.createRoot(container);
    root.render(
      window.React.createElement(window.GraphiQL, { fetcher: fetcher }),
    );
  } catch (err) {
    showError(err && err.message ? err.message : String(err));
    throw err;
  }
})();
