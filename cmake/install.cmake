# Installs libdex, its public headers, dex-shim and dex-spawner, with an
# exported CMake package (find_package(dex) gives dex::dex) and a
# pkg-config file. Included from the top-level CMakeLists when DEX_INSTALL.
include(CMakePackageConfigHelpers)

set(DEX_INSTALL_CMAKEDIR "${CMAKE_INSTALL_LIBDIR}/cmake/dex"
  CACHE STRING "Where dexConfig.cmake is installed, relative to the prefix")

install(TARGETS dex EXPORT dexTargets
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR}
  INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(DIRECTORY include/dex DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}
  FILES_MATCHING PATTERN "*.h")
install(TARGETS dex-shim RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
# The library finds the spawner here (DEX_SPAWNER_INSTALL_PATH) when no
# option, environment variable or neighbouring copy names another.
install(TARGETS dex-spawner
  RUNTIME DESTINATION ${CMAKE_INSTALL_LIBEXECDIR}/dex)
install(TARGETS dex-zygote-helper
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBEXECDIR}/dex)

# A static libdex needs its private dependencies at the consumer's link.
get_target_property(DEX_LIBRARY_TYPE dex TYPE)
install(EXPORT dexTargets NAMESPACE dex:: FILE dexTargets.cmake
  DESTINATION ${DEX_INSTALL_CMAKEDIR})
configure_package_config_file(cmake/dexConfig.cmake.in
  ${PROJECT_BINARY_DIR}/dexConfig.cmake
  INSTALL_DESTINATION ${DEX_INSTALL_CMAKEDIR})
write_basic_package_version_file(${PROJECT_BINARY_DIR}/dexConfigVersion.cmake
  VERSION ${PROJECT_VERSION} COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/dexConfig.cmake
  ${PROJECT_BINARY_DIR}/dexConfigVersion.cmake
  DESTINATION ${DEX_INSTALL_CMAKEDIR})

# pkg-config: a static libdex also needs its private dependencies.
set(DEX_PC_REQUIRES_PRIVATE "lmdb libcrypto fmt")
set(DEX_PC_LIBS_PRIVATE "-pthread")
if(DEX_LIBRARY_TYPE STREQUAL "STATIC_LIBRARY")
  set(DEX_PC_REQUIRES "${DEX_PC_REQUIRES_PRIVATE}")
  set(DEX_PC_REQUIRES_PRIVATE "")
endif()
# The prefix is found from the .pc file's own place, so the package can be
# installed anywhere (cmake --install --prefix) and still be found.
if(IS_ABSOLUTE "${CMAKE_INSTALL_LIBDIR}")
  set(DEX_PC_PREFIX "${CMAKE_INSTALL_PREFIX}")
else()
  file(RELATIVE_PATH DEX_PC_UP "/p/${CMAKE_INSTALL_LIBDIR}/pkgconfig" "/p")
  set(DEX_PC_PREFIX "\${pcfiledir}/${DEX_PC_UP}")
endif()
configure_file(cmake/dex.pc.in ${PROJECT_BINARY_DIR}/dex.pc @ONLY)
install(FILES ${PROJECT_BINARY_DIR}/dex.pc
  DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
