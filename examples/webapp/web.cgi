#!/bin/sh
# The web tier (busybox httpd CGI): a page of notes kept in the kv tier, which it reaches at
# $KV (host:port; `kv:8080`, the service's stable name under cluster DNS). It holds the kv
# write password (the secret kv-pass) so its users do not.
#   GET  /cgi-bin/app?key=NAME          -> the note (from kv; "missing" if none)
#   POST /cgi-bin/app?key=NAME  (body)  -> "stored" once kv has it
#   GET  /cgi-bin/app                   -> "ok" (the readiness check: this tier is up)
# When kv does not answer within 5 s the answer is 502 "kv unreachable at $KV".
key=$(echo "$QUERY_STRING" | sed -n 's/^\(.*&\)*key=\([a-z0-9-]\{1,63\}\)\(&.*\)*$/\2/p')
if [ -z "$key" ]; then
  printf 'Content-Type: text/plain\r\n\r\nok\n'
  exit 0
fi
url="http://${KV:-kv:8080}/cgi-bin/kv?key=$key"
body=/tmp/body.$$
if [ "$REQUEST_METHOD" = POST ]; then
  head -c "${CONTENT_LENGTH:-0}" > "$body"
  timeout 5 wget -qO "$body.out" --header "X-Password: $(cat /run/secrets/kv-pass)" \
    --post-file "$body" "$url"
else
  timeout 5 wget -qO "$body.out" "$url"
fi
rc=$?
if [ $rc -eq 0 ]; then
  printf 'Content-Type: text/plain\r\n\r\n'
  cat "$body.out"
else
  printf 'Status: 502 Bad Gateway\r\nContent-Type: text/plain\r\n\r\n'
  echo "kv unreachable at ${KV:-kv:8080}"
fi
rm -f "$body" "$body.out"
