/*
 * web_assets.h — the dashboard's files, compiled into the library by
 * cmake/embed_web.cmake from web/ (and uPlot from npm when the build
 * found it; see that file).
 */
#ifndef ADB_WEB_ASSETS_H
#define ADB_WEB_ASSETS_H

#include <stddef.h>

typedef struct adb__web_asset {
  const char *name; /* "index.html", "app.js", "app.css" */
  const char *content_type;
  const unsigned char *data;
  size_t len;
} adb__web_asset;

extern const adb__web_asset adb__web_assets[];
extern const int adb__n_web_assets;
/* 1 when uPlot was bundled into app.js, 0 when the page draws with its
 * own canvas renderer. */
extern const int adb__web_has_uplot;

#endif /* ADB_WEB_ASSETS_H */
