# Installing Diffuse like a program: `cmake --install build --prefix P`, the
# Debian package (`cpack -G DEB` in the build directory), `diffuse --version`,
# and the ctest that installs and runs the result. Included at the end of
# CMakeLists.txt, once the targets exist.
#
# Layout under the prefix (GNUInstallDirs):
#   bin/diffuse
#   share/diffuse/models/{tokenizers/clip,demo}   what the program reads
#   share/doc/diffuse/{README.md,docs/}           documentation
# The web page is compiled into the binary (cmake/embed_web.cmake), so nothing
# under web/ is read at run time.
#
# The binary finds share/diffuse from its own location (/proc/self/exe, then
# ../share/diffuse), so the prefix can be anything and can be moved. Only an
# executable that still sits inside this build tree falls back to the source
# tree (src/pipeline/data_dir.h), so an installed copy never reads the source.
include_guard(GLOBAL)
include(GNUInstallDirs)

set(DIFFUSE_INSTALL_DATADIR ${CMAKE_INSTALL_DATADIR}/diffuse)
file(RELATIVE_PATH diffuse_data_from_bin ${CMAKE_INSTALL_FULL_BINDIR} ${CMAKE_INSTALL_FULL_DATADIR}/diffuse)
file(REAL_PATH ${CMAKE_BINARY_DIR} diffuse_real_build_dir)  # compared with /proc/self/exe, which is real too
target_compile_definitions(diffuse_pipeline PRIVATE DIFFUSE_BUILD_DIR="${diffuse_real_build_dir}"
                           DIFFUSE_DATA_FROM_BIN="${diffuse_data_from_bin}")

# --- diffuse --version -------------------------------------------------------
# The commit is read at every build (the target always runs; the file changes,
# and diffuse relinks, only when the commit or its dirty state does).
set(diffuse_build_info_cpp ${CMAKE_BINARY_DIR}/generated/build_info.cpp)
set(diffuse_build_info_cmd ${CMAKE_COMMAND} -DSRC=${CMAKE_SOURCE_DIR} -DOUT=${diffuse_build_info_cpp}
                           -P ${CMAKE_SOURCE_DIR}/cmake/build_info.cmake)
execute_process(COMMAND ${diffuse_build_info_cmd})  # so the file exists from the start
add_custom_target(diffuse_build_info COMMAND ${diffuse_build_info_cmd} BYPRODUCTS ${diffuse_build_info_cpp}
                  COMMENT "Reading the git commit for diffuse --version" VERBATIM)
target_sources(diffuse PRIVATE ${diffuse_build_info_cpp})
add_dependencies(diffuse diffuse_build_info)
if(DIFFUSE_CUDA)
  set(diffuse_archs "")
  foreach(arch ${CMAKE_CUDA_ARCHITECTURES})
    string(REGEX REPLACE "-(real|virtual)$" "" arch "${arch}")
    if(arch MATCHES "^[0-9]")
      set(arch "sm_${arch}")
    endif()
    list(APPEND diffuse_archs ${arch})
  endforeach()
  list(JOIN diffuse_archs ", " diffuse_archs)
else()
  set(diffuse_archs "")
endif()
target_compile_definitions(diffuse PRIVATE DIFFUSE_CUDA_ARCHS="${diffuse_archs}")

# --- install rules -----------------------------------------------------------
install(TARGETS diffuse RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(DIRECTORY ${CMAKE_SOURCE_DIR}/models/ DESTINATION ${DIFFUSE_INSTALL_DATADIR}/models)
install(FILES ${CMAKE_SOURCE_DIR}/README.md DESTINATION ${CMAKE_INSTALL_DOCDIR})
install(DIRECTORY ${CMAKE_SOURCE_DIR}/docs/ DESTINATION ${CMAKE_INSTALL_DOCDIR}/docs)
if(DIFFUSE_CUDA)
  # The CUDA runtime, cuBLAS(Lt) and cuDNN come from NVIDIA's installers, not
  # from Debian, usually under /usr/local/cuda where ld.so does not look: the
  # installed binary keeps the directories it was linked against as its RPATH.
  set_target_properties(diffuse PROPERTIES INSTALL_RPATH_USE_LINK_PATH TRUE)
endif()

# --- Debian package: cpack -G DEB (in the build directory) -------------------
set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME diffuse)
set(CPACK_PACKAGE_VENDOR "Diffuse")
set(CPACK_PACKAGE_CONTACT "Diffuse maintainers <diffuse@localhost>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "Stable Diffusion text-to-image engine and web playground")
# One string (a list would be joined with ';'); each line becomes a line of the
# control file's extended description.
string(CONCAT CPACK_PACKAGE_DESCRIPTION
       "A native C++ engine for Stable Diffusion (SD 1.x, SD 2.x, SDXL) with a\n"
       "built-in demo model, the diffuse command line (generate, serve, pull,\n"
       "models, bench) and a web playground with AUTOMATIC1111 and OpenAI\n"
       "compatible APIs.")
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_STRIP_FILES ON)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)  # diffuse_VERSION_ARCH.deb
set(CPACK_DEBIAN_PACKAGE_SECTION graphics)
# Depends from the ELF's shared libraries (dpkg-shlibdeps): libdnnl2, libspng0,
# libsqlite3-0, libcurl4, ... with the versions of this Debian release.
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
if(DIFFUSE_CUDA)
  # dpkg-shlibdeps finds no package for NVIDIA's libraries and leaves them
  # out, so the package says what it needs in its version and description.
  string(REGEX REPLACE "\\..*" "" cuda_major "${CUDAToolkit_VERSION}")
  set(CPACK_DEBIAN_PACKAGE_VERSION "${PROJECT_VERSION}+cuda${cuda_major}")
  string(APPEND CPACK_PACKAGE_DESCRIPTION
         "\nThis build has the CUDA backend. It needs NVIDIA's CUDA ${cuda_major} runtime,\n"
         "cuBLASLt and cuDNN 9 (looked up in /usr/local/cuda, then the linker path)\n"
         "and, for GPU use, an NVIDIA driver; without a GPU it runs on the CPU.")
endif()
include(CPack)

# --- the install test --------------------------------------------------------
# Not in sanitizer builds (scripts/sanitize.sh): they check the code, which the
# CLI and server tests already run there, not the packaging; and LeakSanitizer
# cannot stop the world in a process that strace already traces.
if(DIFFUSE_TESTS AND NOT DIFFUSE_SANITIZE AND NOT "${CMAKE_CXX_FLAGS}" MATCHES "-fsanitize=")
  add_test(NAME install_and_run
           COMMAND bash ${CMAKE_SOURCE_DIR}/tests/install/run.sh ${CMAKE_BINARY_DIR} ${CMAKE_SOURCE_DIR})
  set_tests_properties(install_and_run PROPERTIES LABELS "install" TIMEOUT 600)
endif()
