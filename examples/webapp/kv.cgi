#!/bin/sh
# A key-value store over HTTP (busybox httpd CGI); values live in /data, the volume.
#   GET  /cgi-bin/kv?key=NAME          -> the value ("missing" if none)
#   POST /cgi-bin/kv?key=NAME  (body)  -> "stored"; needs the header X-Password: <kv-pass>
#   GET  /cgi-bin/kv                   -> "ok" (the readiness check)
key=$(echo "$QUERY_STRING" | sed -n 's/^\(.*&\)*key=\([a-z0-9-]\{1,63\}\)\(&.*\)*$/\2/p')
printf 'Content-Type: text/plain\r\n\r\n'
if [ -z "$key" ]; then
  [ -w /data ] && echo ok || echo "volume not writable"
  exit 0
fi
if [ "$REQUEST_METHOD" = POST ]; then
  if [ "$HTTP_X_PASSWORD" != "$(cat /run/secrets/kv-pass)" ]; then
    echo denied
    exit 0
  fi
  head -c "${CONTENT_LENGTH:-0}" > "/data/.$key.tmp" && sync && mv "/data/.$key.tmp" "/data/$key"
  echo stored
else
  cat "/data/$key" 2>/dev/null || echo missing
fi
