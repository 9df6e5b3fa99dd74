#ifndef DEX_EXPORT_H_
#define DEX_EXPORT_H_

// Symbols of libdex are hidden unless marked; the public API is marked.
#define DEX_EXPORT [[gnu::visibility("default")]]

#endif  // DEX_EXPORT_H_
